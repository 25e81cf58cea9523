"""MobileNetV3 (Small and Large), dense and with Butterfly Transform pointwise convs.

* `Searching for MobileNetV3` - https://arxiv.org/abs/1905.02244 (the architecture, Tables 1 and 2)
* `Butterfly Transform: An Efficient FFT Based Neural Architecture Design` (CVPR 2020)
  - https://arxiv.org/abs/1906.02256 (Table 6: Small-0.35 baseline, 13 MMACs, vs Small-0.5 + BFT, 15 MMACs)

Built with timm's MobileNetV3 class, block decoder and SE layer; the block table is the paper's. One
difference from timm's ``_gen_mobilenet_v3``: the stem is scaled with the width like every other layer
(16 -> 8 channels below 0.75x), as in the TensorFlow reference whose counts the MobileNetV3 paper and the
BFT paper quote. timm keeps 16 stem channels, which puts Small-0.35 at 16.0 MMACs instead of the
published 13 (ours: 12.8); at 0.75x and above the two are identical.

Which 1x1 convs become BFT (``pointwise='bft'``), chosen so that Small-0.5 + BFT matches the paper's
15 MMACs (flops/README.md has the numbers):

* BFT: the expansion and projection 1x1s of every inverted residual block, the pointwise conv of the
  first (depthwise-separable) block, the 1x1 ConvBnAct before pooling (96 -> 576 in Small) and the
  post-pooling head conv (576 -> 1024). The head conv of the dense model has a bias and no norm; a BFT
  has no bias, so the BFT models use timm's ``head_norm=True`` head (bias-free conv, then BatchNorm and
  the activation), which supplies the affine shift: batch size >= 2 in training, as for any BatchNorm
  after global pooling.
* Dense: the squeeze-excitation 1x1s (on pooled 1x1 maps: ~0.1 MMACs in Small-0.5), the stem, the
  depthwise convs and the classifier.
"""
from functools import partial

from torch import nn
from timm.models import MobileNetV3, generate_default_cfgs
from timm.models._efficientnet_blocks import SqueezeExcite
from timm.models._efficientnet_builder import decode_arch_def, resolve_act_layer, resolve_bn_args, round_channels
from timm.models.mobilenetv3 import _create_mnv3

from bftnets.layers.pointwise import bft_kwargs_from
from bftnets.models._helpers import apply_pointwise, imagenet_cfg, register_model

__all__ = []

# MobileNetV3 paper Table 2 (Small) and Table 1 (Large), in timm's block-string notation
# (ds = depthwise-separable, ir = inverted residual, cn = conv-bn-act; e = expansion, se = squeeze-excite,
# nre = ReLU instead of hard-swish)
_ARCH_SMALL = [
    ['ds_r1_k3_s2_e1_c16_se0.25_nre'],
    ['ir_r1_k3_s2_e4.5_c24_nre', 'ir_r1_k3_s1_e3.67_c24_nre'],
    ['ir_r1_k5_s2_e4_c40_se0.25', 'ir_r2_k5_s1_e6_c40_se0.25'],
    ['ir_r2_k5_s1_e3_c48_se0.25'],
    ['ir_r3_k5_s2_e6_c96_se0.25'],
    ['cn_r1_k1_s1_c576'],
]
_ARCH_LARGE = [
    ['ds_r1_k3_s1_e1_c16_nre'],
    ['ir_r1_k3_s2_e4_c24_nre', 'ir_r1_k3_s1_e3_c24_nre'],
    ['ir_r3_k5_s2_e3_c40_se0.25_nre'],
    ['ir_r1_k3_s2_e6_c80', 'ir_r1_k3_s1_e2.5_c80', 'ir_r2_k3_s1_e2.3_c80'],
    ['ir_r2_k3_s1_e6_c112_se0.25'],
    ['ir_r3_k5_s2_e6_c160_se0.25'],
    ['cn_r1_k1_s1_c960'],
]


def _create_mobilenet_v3(variant: str, size: str, width: float, pointwise: str, pretrained: bool = False,
                         **kwargs) -> MobileNetV3:
    """MobileNetV3-``size`` (``'small'`` or ``'large'``) at ``width``, with the pointwise switch."""
    bft_kwargs = bft_kwargs_from(kwargs)
    arch_def, num_features = (_ARCH_SMALL, 1024) if size == 'small' else (_ARCH_LARGE, 1280)
    model_kwargs = dict(
        block_args=decode_arch_def(arch_def),
        num_features=num_features,
        stem_size=16,
        fix_stem=False,  # scale the stem like the TF reference (see module docstring)
        round_chs_fn=partial(round_channels, multiplier=width),
        norm_layer=partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)),
        act_layer=resolve_act_layer(kwargs, 'hard_swish'),
        se_layer=partial(SqueezeExcite, gate_layer='hard_sigmoid', force_act_layer=nn.ReLU,
                         rd_round_fn=round_channels),
    )
    if pointwise == 'bft':
        model_kwargs.update(head_bias=False, head_norm=True)  # the head conv becomes a BFT (no bias)
    model = _create_mnv3(variant, pretrained, **dict(model_kwargs, **kwargs))
    # SE convs have a bias, so the conversion (bias-free 1x1 convs only) leaves them dense; say so anyway
    return apply_pointwise(model, pointwise, bft_kwargs, skip=('*.se.*',))


default_cfgs = generate_default_cfgs({
    'mobilenetv3_small_035': imagenet_cfg(paper_ids='arXiv:1905.02244'),
    'mobilenetv3_small_050_bft': imagenet_cfg(paper_ids='arXiv:1906.02256'),
    'mobilenetv3_small_100_bft': imagenet_cfg(paper_ids='arXiv:1906.02256'),
    'mobilenetv3_large_100_bft': imagenet_cfg(paper_ids='arXiv:1906.02256'),
})


@register_model
def mobilenetv3_small_035(pretrained=False, **kwargs) -> MobileNetV3:
    """MobileNetV3-Small-0.35 (dense baseline of the BFT paper, 13 MMACs at 224)."""
    return _create_mobilenet_v3('mobilenetv3_small_035', 'small', 0.35, 'conv', pretrained, **kwargs)


@register_model
def mobilenetv3_small_050_bft(pretrained=False, **kwargs) -> MobileNetV3:
    """MobileNetV3-Small-0.5 with BFT pointwise convs (paper Table 6; ``bft_base``, ``bft_residual``,
    ``bft_inner_act``, ``bft_plan``)."""
    return _create_mobilenet_v3('mobilenetv3_small_050_bft', 'small', 0.5, 'bft', pretrained, **kwargs)


@register_model
def mobilenetv3_small_100_bft(pretrained=False, **kwargs) -> MobileNetV3:
    """MobileNetV3-Small-1.0 with BFT pointwise convs (beyond the paper)."""
    return _create_mobilenet_v3('mobilenetv3_small_100_bft', 'small', 1.0, 'bft', pretrained, **kwargs)


@register_model
def mobilenetv3_large_100_bft(pretrained=False, **kwargs) -> MobileNetV3:
    """MobileNetV3-Large-1.0 with BFT pointwise convs (beyond the paper)."""
    return _create_mobilenet_v3('mobilenetv3_large_100_bft', 'large', 1.0, 'bft', pretrained, **kwargs)
