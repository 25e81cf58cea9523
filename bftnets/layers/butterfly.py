"""ButterflyTransform: the BFT layer of Alizadeh Vahid et al., "Butterfly Transform" (CVPR 2020)."""
import math
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from bftnets.ops import butterfly as F_bft
from bftnets.ops.plan import choose_groups, parse_plan

__all__ = ['ButterflyTransform', 'butterfly_parameters']


class ButterflyTransform(nn.Module):
    """Drop-in replacement for a bias-free 1x1 convolution on NCHW tensors, in O(n log n).

    For ``in_channels == out_channels == base**L`` this is exactly the paper's B(n, base) (Eq. 3): L
    butterfly layers, layer t mixing base-``base`` digit t (most significant first), ``base * n * L``
    weights and no other parameters, plus the first-to-last residual (input of the first layer added to
    the output of the last) when ``residual=True``. No BatchNorm or activation inside (paper Sec. 3.1).

    Any other widths: the transform runs on ``N = max(in, out)`` channels (rounded up to the next size
    with small prime factors, see :func:`bftnets.ops.butterfly.butterfly_radices`), written as mixed-radix
    digits. The input is tiled cyclically up to N channels and the N outputs are folded (summed) down to
    ``out_channels``, so every weight is used, every output is connected to every input, and the cost stays
    ``N * sum(radices)`` MACs per pixel, which is ``base * N * log_base(N)`` for powers of ``base``.

    Args:
        in_channels, out_channels: channel counts (>= 1).
        base: butterfly base k (paper: 4).
        residual: add the first-to-last residual (paper's best variant).
        inner_act: ablation only: ReLU between butterfly layers (the paper shows it hurts).
        plan: execution grouping override, e.g. ``'factored'``, ``'dense'``, ``'2,2'``, or ``None`` to
            choose per shape (see :mod:`bftnets.ops.plan`; ``BFT_PLAN`` env var overrides globally).
    """

    def __init__(
            self,
            in_channels: int,
            out_channels: int,
            base: int = 4,
            residual: bool = True,
            inner_act: bool = False,
            plan: Optional[str] = None,
    ):
        super().__init__()
        for name, value in (('in_channels', in_channels), ('out_channels', out_channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f'ButterflyTransform: {name} must be a positive int, got {value!r}')
        if not isinstance(base, int) or isinstance(base, bool) or base < 2:
            raise ValueError(f'ButterflyTransform: base must be an int >= 2 (the paper uses 4), got {base!r}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.base = base
        self.residual = residual
        self.inner_act = inner_act
        self.radices: List[int] = F_bft.butterfly_radices(max(in_channels, out_channels), base)
        self.size = math.prod(self.radices)
        self.plan = plan
        # TorchScript cannot consult the plan cache or the environment: it runs the default grouping
        self.script_groups: List[int] = [1] * len(self.radices) if inner_act else parse_plan(
            plan or 'auto', self.radices)
        # (sum(radices), N): rows [sum(r[:t]), sum(r[:t+1])) hold layer t as (P, Q, r_out, r_in) in row-major order.
        # 2-D on purpose: optimiser helpers (timm's param_groups_weight_decay) treat 1-D tensors as biases and
        # would silently drop weight decay; BFT weights get their own group via butterfly_parameters() instead.
        self.weight = nn.Parameter(torch.empty(sum(self.radices), self.size))
        self.reset_parameters()

    @property
    def num_layers(self) -> int:
        return len(self.radices)

    def reset_parameters(self) -> None:
        """Paper Eq. 9: U(-y, y) with y = x^(1/L) 2^((L-1)/L), so a path product has E|B_uv| = x / 2,
        x = sqrt(6 / (n_in + n_out)) being the Xavier bound of the dense matrix it replaces."""
        layers = self.num_layers
        xavier = math.sqrt(6.0 / (self.in_channels + self.out_channels))
        bound = xavier ** (1.0 / layers) * 2.0 ** ((layers - 1) / layers)
        nn.init.uniform_(self.weight, -bound, bound)

    @torch.jit.unused
    def groups(self, x: Tensor) -> List[int]:
        """The plan's grouping for ``(B, S, N)`` activations (cached per shape, dtype, device and mode)."""
        if self.inner_act:
            return [1] * self.num_layers
        rows = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]
        if torch.compiler.is_compiling():  # rows may be symbolic (dynamic shapes): plan for the power of 4 at
            bucket = 1                      # or above it; each comparison is a guard, so the graph stays dynamic
            while bucket < rows and bucket < 2 ** 20:  # within a bucket (eager plans for the exact rows)
                bucket *= 4
            rows = bucket
        return choose_groups(self.radices, rows, x.dtype, x.device.type, self.training, self.plan)

    @torch.jit.unused
    def _inference_factors(self, groups: List[int]) -> List[Tensor]:
        """Merged factors reused across calls while the weight is unchanged (inference only: no autograd)."""
        if torch.compiler.is_compiling():
            return F_bft.grouped_factors(self.weight, self.radices, groups)
        weight = self.weight
        key = (tuple(groups), weight.data_ptr(), weight._version, weight.dtype, weight.device)
        cache = self.__dict__.get('_factor_cache')
        if cache is None or cache[0] != key:
            cache = (key, [f.detach() for f in F_bft.grouped_factors(weight, self.radices, groups)])
            self.__dict__['_factor_cache'] = cache
        return cache[1]

    def _transform(self, x: Tensor) -> Tensor:
        """The transform on ``(B, S, in_channels)`` activations (any strides), returning ``(B, S, out_channels)``
        in the same memory format (channel-major stays channel-major)."""
        if self.inner_act:
            x = F_bft.tile_channels(x, self.size)
            y = x.reshape(-1, self.size)
            for t, factor in enumerate(F_bft.split_factors(self.weight, self.radices)):
                if t > 0:
                    y = torch.relu(y)
                y = F_bft.apply_factor(y, factor)
            y = y.view(x.shape)
            if self.residual:
                y = y + x
            return F_bft.fold_channels(y, self.out_channels)
        if torch.jit.is_scripting():
            factors = F_bft.grouped_factors(self.weight, self.radices, self.script_groups)
            return F_bft.column_butterfly(x, factors, self.out_channels, self.residual)
        groups = self.groups(x)
        if torch.is_grad_enabled() and self.weight.requires_grad:
            factors = F_bft.grouped_factors(self.weight, self.radices, groups)
        else:
            factors = self._inference_factors(groups)
        return F_bft.butterfly_multiply(x, factors, self.out_channels, self.residual, self.weight)

    def forward_rows(self, x: Tensor) -> Tensor:
        """The transform on ``(M, in_channels)`` rows, returning ``(M, out_channels)``."""
        return self._transform(x.unsqueeze(0)).squeeze(0)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'ButterflyTransform expects NCHW input with {self.in_channels} channels, got shape {list(x.shape)}')
        batch, _, height, width = x.shape
        # (B, H*W, C) view of NCHW or channels_last memory, no copy (entering the column layout copies once,
        # except for NCHW batch 1)
        y = self._transform(x.flatten(2).transpose(1, 2))
        # same memory format as the input, like nn.Conv2d
        return y.transpose(1, 2).reshape(batch, self.out_channels, height, width)

    @torch.no_grad()
    def to_dense(self) -> Tensor:
        """The equivalent ``(out_channels, in_channels)`` matrix, residual, tiling and folding included."""
        eye = torch.eye(self.in_channels, dtype=self.weight.dtype, device=self.weight.device)
        return self.forward_rows(eye).t().contiguous()

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, base={self.base}, radices={self.radices}, '
                f'residual={self.residual}' + (', inner_act=True' if self.inner_act else '')
                + (f', plan={self.plan!r}' if self.plan else ''))


def butterfly_parameters(model: nn.Module) -> Dict[str, nn.Parameter]:
    """``{name: weight}`` of every ButterflyTransform in ``model``, for an optimiser group of its own
    (the paper finds BFT very sensitive to weight decay)."""
    return {f'{name}.weight' if name else 'weight': module.weight
            for name, module in model.named_modules() if isinstance(module, ButterflyTransform)}
