"""ShuffleNetV2, dense and with Butterfly Transform pointwise convs.

* `ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design` - https://arxiv.org/abs/1807.11164
  (the architecture, Table 5: 0.5x and 1.0x are the baselines of the BFT paper)
* `Butterfly Transform: An Efficient FFT Based Neural Architecture Design` (CVPR 2020)
  - https://arxiv.org/abs/1906.02256 (Table 5: ShuffleNetV2-1.25 + BFT at 14 / 21 / 41 MMACs)

Stem (3x3 conv, stride 2, then 3x3 max pool), three stages whose first unit downsamples, Conv5 (1x1 to
``num_features``), global pooling, classifier. A basic unit splits the channels in half, runs one half
through 1x1 -> 3x3 depthwise -> 1x1 and concatenates; a downsampling unit runs both halves' branches on
the whole input (left: 3x3 depthwise stride 2 -> 1x1, right: 1x1 -> 3x3 depthwise stride 2 -> 1x1). Every
unit ends with a two-group channel shuffle.

``pointwise='bft'`` makes every 1x1 conv of both unit types and Conv5 a BFT, except the pointwise convs
that read the 24-channel stem output (the paper: "except the first pointwise conv whose input has 24
channels"; both 1x1 convs of the first unit read it, and keeping both dense is what the paper's counts need).

``shufflenetv2_125_bft``: stem 24, stages of 4 / 8 / 4 units with widths 128 / 256 / **1280**, Conv5 = 1024.
The paper prints 128 / 256 / 1024, but with stage 4 = 1024 the network costs 37.9 MMACs at 224 (13.1 at 128,
19.8 at 160), 6-8% under its 41 / 14 / 21, whichever 24-channel convs stay dense; no other reading of the
text that we tried closes that gap. Stage 4 = 1280 (1.25 x 1024) gives 40.1 / 13.8 / 21.0, within 2.1% of all three rows
(flops/README.md). ``ShuffleNetV2(stage_chs=(128, 256, 1024), pointwise='bft')`` builds the printed variant.
"""
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from timm.layers import create_classifier, create_conv2d, get_norm_act_layer
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs
from timm.models._features import feature_take_indices

from bftnets.layers.pointwise import bft_kwargs_from, create_pointwise
from bftnets.models._helpers import imagenet_cfg, register_model

__all__ = ['ShuffleNetV2', 'ShuffleUnit']


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` channel groups: (g, c/g) -> (c/g, g)."""
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: basic (``stride == 1``, ``in_chs == out_chs``) or downsampling (``stride == 2``)."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int = 1,
            pointwise: str = 'conv',
            bft_kwargs: Optional[Dict[str, Any]] = None,
            dense_input_pw: bool = False,
            act_layer: nn.Module = nn.ReLU,
            norm_layer: nn.Module = nn.BatchNorm2d,
    ):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f'ShuffleUnit stride must be 1 or 2, got {stride}')
        if out_chs % 2:
            raise ValueError(f'ShuffleUnit needs an even number of output channels, got {out_chs}')
        if stride == 1 and in_chs != out_chs:
            raise ValueError(f'a basic ShuffleUnit (stride 1) keeps the width, got {in_chs} -> {out_chs}')
        self.stride = stride
        branch_chs = out_chs // 2
        branch_in = in_chs if stride > 1 else branch_chs
        bft_kwargs = bft_kwargs or {}
        norm_act = get_norm_act_layer(norm_layer, act_layer)
        # the convs reading the unit input stay dense when asked (the paper's first unit after the stem)
        input_kind, input_kwargs = ('conv', {}) if dense_input_pw else (pointwise, bft_kwargs)
        pw = partial(create_pointwise, kind=pointwise, **bft_kwargs)
        pw_input = partial(create_pointwise, kind=input_kind, **input_kwargs)

        if stride > 1:
            self.branch1 = nn.Sequential(
                create_conv2d(in_chs, in_chs, 3, stride=stride, depthwise=True),
                norm_act(in_chs, apply_act=False),
                pw_input(in_chs, branch_chs),
                norm_act(branch_chs),
            )
        else:
            self.branch1 = nn.Identity()
        self.branch2 = nn.Sequential(
            pw_input(branch_in, branch_chs),
            norm_act(branch_chs),
            create_conv2d(branch_chs, branch_chs, 3, stride=stride, depthwise=True),
            norm_act(branch_chs, apply_act=False),
            pw(branch_chs, branch_chs),
            norm_act(branch_chs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 with a pointwise switch: ``pointwise='conv'`` (dense) or ``'bft'`` (Butterfly Transform)."""

    def __init__(
            self,
            stage_chs: Sequence[int] = (116, 232, 464),
            stage_units: Sequence[int] = (4, 8, 4),
            stem_chs: int = 24,
            num_features: int = 1024,
            num_classes: int = 1000,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            pointwise: str = 'conv',
            bft_kwargs: Optional[Dict[str, Any]] = None,
            dense_stem_pw: bool = True,
            act_layer: nn.Module = nn.ReLU,
            norm_layer: nn.Module = nn.BatchNorm2d,
    ):
        """
        Args:
            stage_chs: output channels of the three stages.
            stage_units: units per stage (the first one downsamples).
            stem_chs: channels of the stem conv.
            num_features: output channels of Conv5 (the features before pooling).
            num_classes, in_chans, global_pool, drop_rate: as in every timm model.
            pointwise: ``'conv'`` or ``'bft'``: the kind of every 1x1 conv in the units and Conv5.
            bft_kwargs: ButterflyTransform options (``base``, ``residual``, ``inner_act``, ``plan``).
            dense_stem_pw: with ``pointwise='bft'``, keep the 1x1 convs that read the stem output dense.
        """
        super().__init__()
        if len(stage_chs) != len(stage_units):
            raise ValueError(f'stage_chs {tuple(stage_chs)} and stage_units {tuple(stage_units)} differ in length')
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        norm_act = get_norm_act_layer(norm_layer, act_layer)

        self.conv_stem = create_conv2d(in_chans, stem_chs, 3, stride=2)
        self.bn1 = norm_act(stem_chs)
        self.stem_pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.feature_info = [dict(num_chs=stem_chs, reduction=2, module='bn1')]

        stages: List[nn.Module] = []
        in_chs, reduction = stem_chs, 4
        for i, (chs, units) in enumerate(zip(stage_chs, stage_units)):
            reduction *= 2
            blocks = [
                ShuffleUnit(
                    in_chs if j == 0 else chs, chs, stride=2 if j == 0 else 1, pointwise=pointwise,
                    bft_kwargs=bft_kwargs, dense_input_pw=dense_stem_pw and i == 0 and j == 0,
                    act_layer=act_layer, norm_layer=norm_layer)
                for j in range(units)
            ]
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f'stages.{i}'))
            in_chs = chs
        self.stages = nn.Sequential(*stages)

        # Conv5
        self.conv_head = create_pointwise(in_chs, num_features, pointwise, **(bft_kwargs or {}))
        self.norm_head = norm_act(num_features)
        self.num_features = self.head_hidden_size = num_features

        self.global_pool, self.fc = create_classifier(num_features, num_classes, pool_type=global_pool)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^conv_stem|^bn1',
            blocks=r'^stages\.(\d+)' if coarse else [
                (r'^stages\.(\d+)\.(\d+)', None),
                (r'^conv_head|^norm_head', (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward features that returns intermediates (stem, then each stage; see ``feature_info``).

        Args:
            x: input images.
            indices: take the last n if an int, all if None, those listed if a sequence.
            norm: unused (no per-stage norm), kept for the timm API.
            stop_early: stop after the last requested intermediate.
            output_fmt: only ``'NCHW'``.
            intermediates_only: return only the intermediates.
        """
        assert output_fmt in ('NCHW',), 'Output shape must be NCHW.'
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)

        x = self.bn1(self.conv_stem(x))
        if 0 in take_indices:
            intermediates.append(x)
        x = self.stem_pool(x)
        if torch.jit.is_scripting() or not stop_early:  # can't slice in torchscript
            stages = self.stages
        else:
            stages = self.stages[:max_index]
        last_idx = 0
        for feat_idx, stage in enumerate(stages, start=1):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
            if feat_idx in take_indices:
                intermediates.append(x)
            last_idx = feat_idx

        if intermediates_only:
            return intermediates
        if last_idx == len(self.stages):
            x = self.norm_head(self.conv_head(x))
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages (and head) not needed for the ``indices`` intermediates."""
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        if max_index < len(self.stages):
            self.stages = self.stages[:max_index]
            prune_head = True  # Conv5 reads the last stage
        if prune_head:
            self.conv_head = nn.Identity()
            self.norm_head = nn.Identity()
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_pool(self.bn1(self.conv_stem(x)))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x, flatten=True)
        else:
            x = self.stages(x)
        return self.norm_head(self.conv_head(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create_shufflenet_v2(variant: str, stage_chs: Sequence[int], pointwise: str, pretrained: bool = False,
                          **kwargs) -> ShuffleNetV2:
    bft_kwargs = bft_kwargs_from(kwargs)
    if pointwise == 'conv' and bft_kwargs:
        raise ValueError(f'BFT options {sorted(bft_kwargs)} were given for a dense model; use a *_bft model')
    return build_model_with_cfg(
        ShuffleNetV2, variant, pretrained,
        stage_chs=stage_chs, pointwise=pointwise, bft_kwargs=bft_kwargs,
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)),
        **kwargs,
    )


default_cfgs = generate_default_cfgs({
    'shufflenetv2_050': imagenet_cfg('fc', paper_ids='arXiv:1807.11164'),
    'shufflenetv2_100': imagenet_cfg('fc', paper_ids='arXiv:1807.11164'),
    'shufflenetv2_125_bft': imagenet_cfg('fc', paper_ids='arXiv:1906.02256'),
})


@register_model
def shufflenetv2_050(pretrained=False, **kwargs) -> ShuffleNetV2:
    """ShuffleNetV2-0.5x (dense baseline of the BFT paper, 41 MMACs at 224)."""
    return _create_shufflenet_v2('shufflenetv2_050', (48, 96, 192), 'conv', pretrained, **kwargs)


@register_model
def shufflenetv2_100(pretrained=False, **kwargs) -> ShuffleNetV2:
    """ShuffleNetV2-1.0x (146 MMACs at 224)."""
    return _create_shufflenet_v2('shufflenetv2_100', (116, 232, 464), 'conv', pretrained, **kwargs)


@register_model
def shufflenetv2_125_bft(pretrained=False, **kwargs) -> ShuffleNetV2:
    """ShuffleNetV2-1.25 with BFT pointwise convs (paper Table 5; stage 4 width 1280, see the module docstring;
    ``bft_base``, ``bft_residual``, ``bft_inner_act``, ``bft_plan``)."""
    return _create_shufflenet_v2('shufflenetv2_125_bft', (128, 256, 1280), 'bft', pretrained, **kwargs)
