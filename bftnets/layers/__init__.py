from bftnets.layers.butterfly import ButterflyTransform  # noqa: F401
