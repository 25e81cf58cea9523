"""The pointwise factory: one switch between a dense 1x1 conv and a ButterflyTransform.

Model families take ``pointwise='conv' | 'bft'`` plus BFT options, so a baseline and its BFT variant are the
same code. Two entry points:

* :func:`create_pointwise` builds one pointwise layer (used by models written here, e.g. ShuffleNetV2);
* :func:`convert_pointwise` swaps the pointwise convs of an already-built model (used on timm's own
  MobileNetV1/V3 generators), in the style of timm's ``freeze_batch_norm_2d`` helper.

ButterflyTransform is registered as an FX leaf the timm way, so timm's FX feature extraction and
``torch.fx``-based tooling treat it as one opaque call.
"""
import fnmatch
from typing import Any, Dict, Iterable, Optional

from timm.layers import register_notrace_module
from torch import nn

from bftnets.layers.butterfly import ButterflyTransform

__all__ = ['POINTWISE_KINDS', 'create_pointwise', 'convert_pointwise', 'is_pointwise_conv', 'bft_kwargs_from']

POINTWISE_KINDS = ('conv', 'bft')

register_notrace_module(ButterflyTransform)


def bft_kwargs_from(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Pop the model-level ``bft_*`` options (``bft_base``, ``bft_residual``, ``bft_inner_act``, ``bft_plan``)
    out of ``kwargs`` and return them as ButterflyTransform keyword arguments."""
    names = ('base', 'residual', 'inner_act', 'plan')
    return {name: kwargs.pop(f'bft_{name}') for name in names if f'bft_{name}' in kwargs}


def _check_kind(kind: str, bft_kwargs: Dict[str, Any]) -> None:
    if kind not in POINTWISE_KINDS:
        raise ValueError(f'pointwise kind must be one of {POINTWISE_KINDS}, got {kind!r}')
    if kind == 'conv' and bft_kwargs:
        raise ValueError(
            f'BFT options {sorted(bft_kwargs)} were given for a dense (pointwise=\'conv\') layer; '
            f'use a *_bft model or pointwise=\'bft\'')


def create_pointwise(in_chs: int, out_chs: int, kind: str = 'conv', **bft_kwargs) -> nn.Module:
    """A bias-free pointwise layer: ``nn.Conv2d(in_chs, out_chs, 1, bias=False)`` or a ButterflyTransform.

    Both map NCHW with ``in_chs`` channels to NCHW with ``out_chs`` channels (follow them with BatchNorm).
    ``bft_kwargs`` (``base``, ``residual``, ``inner_act``, ``plan``) go to ButterflyTransform.
    """
    _check_kind(kind, bft_kwargs)
    if kind == 'conv':
        return nn.Conv2d(in_chs, out_chs, kernel_size=1, bias=False)
    return ButterflyTransform(in_chs, out_chs, **bft_kwargs)


def is_pointwise_conv(module: nn.Module) -> bool:
    """True for the convs a ButterflyTransform can replace exactly: 1x1 kernel, stride 1, no padding,
    groups 1, no bias (a bias would be lost; BN after the conv plays its part)."""
    return (isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1)
            and tuple(module.stride) == (1, 1) and module.groups == 1 and module.bias is None
            and module.padding in (0, (0, 0), 'valid', 'same'))


def convert_pointwise(
        model: nn.Module,
        bft_kwargs: Optional[Dict[str, Any]] = None,
        skip: Iterable[str] = (),
) -> nn.Module:
    """Replace every pointwise conv of ``model`` (see :func:`is_pointwise_conv`) by a ButterflyTransform.

    Args:
        model: a built model, changed in place (also returned). If ``model`` itself is a pointwise conv the
            replacement is returned.
        bft_kwargs: ButterflyTransform options (``base``, ``residual``, ``inner_act``, ``plan``).
        skip: ``fnmatch`` patterns of qualified module names to keep dense, e.g. ``('*.se.*', 'conv_head')``.

    The replacement gets the device, dtype and train/eval mode of the conv, and its forward hooks (so feature
    hooks registered by timm's ``features_only`` wrappers keep working).
    """
    bft_kwargs = dict(bft_kwargs or {})
    skip = tuple(skip)

    def swap(name: str, conv: nn.Module) -> nn.Module:
        if not is_pointwise_conv(conv) or any(fnmatch.fnmatchcase(name, p) for p in skip):
            return conv
        bft = ButterflyTransform(conv.in_channels, conv.out_channels, **bft_kwargs)
        bft.to(device=conv.weight.device, dtype=conv.weight.dtype).train(conv.training)
        for hooks in ('_forward_pre_hooks', '_forward_pre_hooks_with_kwargs', '_forward_hooks',
                      '_forward_hooks_with_kwargs', '_forward_hooks_always_called'):
            getattr(bft, hooks).update(getattr(conv, hooks))
        return bft

    if is_pointwise_conv(model):
        return swap('', model)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            qualified = f'{name}.{child_name}' if name else child_name
            new = swap(qualified, child)
            if new is not child:
                setattr(module, child_name, new)
    return model
