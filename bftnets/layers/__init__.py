from bftnets.layers.butterfly import ButterflyTransform, butterfly_parameters  # noqa: F401
