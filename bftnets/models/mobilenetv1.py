"""MobileNetV1, dense and with Butterfly Transform pointwise convs.

* `MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications`
  - https://arxiv.org/abs/1704.04861 (the architecture; 0.25x and 0.5x are the baselines of the BFT paper)
* `Butterfly Transform: An Efficient FFT Based Neural Architecture Design` (CVPR 2020)
  - https://arxiv.org/abs/1906.02256 (Table 4: every pointwise conv a BFT, 1.0x and 2.0x)

The network is timm's own MobileNetV1 generator (``timm.models.efficientnet._gen_mobilenet_v1``): 3x3 stem,
13 depthwise-separable blocks, 1024 (x width) features straight into the classifier (no extra head conv,
as in the paper). The BFT variants convert every pointwise conv of that same network; the stem, the
depthwise convs and the classifier stay dense (SPEC.md section 2).
"""
from timm.models import EfficientNet, generate_default_cfgs
from timm.models.efficientnet import _gen_mobilenet_v1

from bftnets.layers.pointwise import bft_kwargs_from
from bftnets.models._helpers import apply_pointwise, imagenet_cfg, register_model

__all__ = []


def _create_mobilenet_v1(variant: str, width: float, pointwise: str, pretrained: bool = False, **kwargs):
    """timm's MobileNetV1 at ``width``, then the pointwise switch (``'conv'`` or ``'bft'``)."""
    bft_kwargs = bft_kwargs_from(kwargs)
    model = _gen_mobilenet_v1(variant, width, pretrained=pretrained, **kwargs)
    return apply_pointwise(model, pointwise, bft_kwargs)


default_cfgs = generate_default_cfgs({
    'mobilenetv1_025': imagenet_cfg(paper_ids='arXiv:1704.04861'),
    'mobilenetv1_050': imagenet_cfg(paper_ids='arXiv:1704.04861'),
    'mobilenetv1_100_bft': imagenet_cfg(paper_ids='arXiv:1906.02256'),
    'mobilenetv1_200_bft': imagenet_cfg(paper_ids='arXiv:1906.02256'),
})


@register_model
def mobilenetv1_025(pretrained=False, **kwargs) -> EfficientNet:
    """MobileNetV1-0.25 (dense baseline of the BFT paper, 41 MMACs at 224)."""
    return _create_mobilenet_v1('mobilenetv1_025', 0.25, 'conv', pretrained, **kwargs)


@register_model
def mobilenetv1_050(pretrained=False, **kwargs) -> EfficientNet:
    """MobileNetV1-0.5 (dense baseline of the BFT paper, 150 MMACs at 224)."""
    return _create_mobilenet_v1('mobilenetv1_050', 0.5, 'conv', pretrained, **kwargs)


@register_model
def mobilenetv1_100_bft(pretrained=False, **kwargs) -> EfficientNet:
    """MobileNetV1-1.0 with BFT pointwise convs (``bft_base``, ``bft_residual``, ``bft_inner_act``, ``bft_plan``)."""
    return _create_mobilenet_v1('mobilenetv1_100_bft', 1.0, 'bft', pretrained, **kwargs)


@register_model
def mobilenetv1_200_bft(pretrained=False, **kwargs) -> EfficientNet:
    """MobileNetV1-2.0 with BFT pointwise convs (``bft_base``, ``bft_residual``, ``bft_inner_act``, ``bft_plan``)."""
    return _create_mobilenet_v1('mobilenetv1_200_bft', 2.0, 'bft', pretrained, **kwargs)
