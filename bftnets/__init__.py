"""bftnets: Butterfly Transform networks (Alizadeh Vahid et al., CVPR 2020) on timm."""
from bftnets.layers import ButterflyTransform, butterfly_parameters, convert_pointwise, create_pointwise  # noqa: F401
from bftnets import models  # noqa: F401  (registers the model zoo with timm)

__version__ = '0.1.0'
