"""Shared pieces of the bftnets model files: a registry guard and the pointwise switch for built models."""
from typing import Any, Callable, Dict, Iterable, List

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import is_model, model_entrypoint, register_model as timm_register_model
from torch import nn

from bftnets.layers.pointwise import POINTWISE_KINDS, convert_pointwise

__all__ = ['register_model', 'apply_pointwise', 'list_bftnets_models', 'imagenet_cfg']

_REGISTERED: List[str] = []


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """timm's ``register_model``, but refusing to overwrite a name that timm (or anyone else) already has."""
    name = fn.__name__
    if is_model(name) and model_entrypoint(name).__module__ != fn.__module__:
        raise RuntimeError(
            f'bftnets would overwrite the model {name!r} already registered by '
            f'{model_entrypoint(name).__module__}; give the bftnets model another name')
    if name not in _REGISTERED:
        _REGISTERED.append(name)
    return timm_register_model(fn)


def imagenet_cfg(classifier: str = 'classifier', **kwargs) -> Dict[str, Any]:
    """The pretrained_cfg every bftnets model shares (ImageNet at 224; no weights are published)."""
    return {
        'url': '', 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bilinear', 'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'conv_stem', 'classifier': classifier, 'license': 'apache-2.0', **kwargs,
    }


def list_bftnets_models() -> List[str]:
    """Names of the models bftnets registers with timm, in registration order."""
    return list(_REGISTERED)


def apply_pointwise(model: nn.Module, pointwise: str, bft_kwargs: Dict[str, Any],
                    skip: Iterable[str] = ()) -> nn.Module:
    """The pointwise switch for a model built with dense convs: ``'conv'`` keeps it, ``'bft'`` converts
    its pointwise convs (see :func:`bftnets.layers.convert_pointwise`)."""
    if pointwise not in POINTWISE_KINDS:
        raise ValueError(f'pointwise must be one of {POINTWISE_KINDS}, got {pointwise!r}')
    if pointwise == 'conv':
        if bft_kwargs:
            raise ValueError(
                f'BFT options {sorted("bft_" + k for k in bft_kwargs)} were given for a model with dense '
                f'pointwise convs; use one of the *_bft models')
        return model
    return convert_pointwise(model, bft_kwargs, skip=skip)
