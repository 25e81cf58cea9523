"""Model factory used by the Hydra configs: importing this module imports bftnets, which registers its models."""
import difflib
from typing import Any

import timm
from torch import nn

import bftnets  # noqa: F401  (registers the bftnets models with timm)
from bftnets.training.errors import ConfigError

__all__ = ['create_model']


def create_model(name: str, num_classes: int, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with the bftnets models registered and a clear error for an unknown name.

    ``in_chans`` uses timm's stem override (e.g. 1 for Fashion-MNIST); extra kwargs (``bft_base``,
    ``bft_residual``, ``bft_inner_act``, ``drop_rate``...) go to the model's constructor.
    """
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.5)
        hint = f'; did you mean {", ".join(close)}?' if close else ''
        raise ConfigError(f'unknown model {name!r} (model.name): not registered by bftnets or timm{hint}')
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as e:  # e.g. bft_* options given to a baseline model
        raise ConfigError(f'model {name!r} does not accept these options {sorted(kwargs)}: {e}') from e
