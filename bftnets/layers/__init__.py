from bftnets.layers.butterfly import ButterflyTransform, butterfly_parameters  # noqa: F401
from bftnets.layers.pointwise import convert_pointwise, create_pointwise  # noqa: F401
