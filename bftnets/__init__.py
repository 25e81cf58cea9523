"""bftnets: Butterfly Transform networks (Alizadeh Vahid et al., CVPR 2020) on timm."""
from bftnets.layers import ButterflyTransform, butterfly_parameters  # noqa: F401

__version__ = '0.1.0'
