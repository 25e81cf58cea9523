"""MAC and parameter counting on fvcore, with an op handle for the Butterfly Transform.

Two conventions, from one jit trace:

* **paper** (the headline, as in the BFT paper and the MobileNet/ShuffleNet papers): multiply-adds of convs
  and linear layers (conv, linear, addmm, matmul, mm, bmm, einsum) plus every ButterflyTransform charged its
  factored cost, ``rows * weight.numel()`` (= ``N * sum(radices)`` per pixel, ``k n log_k n`` for ``n = k^L``).
  BatchNorm, pooling, activations and elementwise ops (the BFT residual add, tiling and folding included)
  are free.
* **fvcore** full count: fvcore's default handles (which add BatchNorm, adaptive pooling, upsampling ...),
  with the same BFT charge. This is the convention of timm's published counts.

The BFT multiply runs through the autograd Function ``ButterflyMultiply``, which appears in the trace as
``prim::PythonOp.ButterflyMultiply`` and receives the flat weight next to the execution factors; its handle
charges ``rows * weight.numel()`` whatever the factors are. Merged execution plans also build bigger factors
from the weights with batch-independent einsums/matmuls, an execution detail that is not part of the
architecture: the count pins every ButterflyTransform to the ``'factored'`` plan while it traces (those
factors are plain views of the weight), so the result does not depend on the plan a model was built or run
with, nor on ``BFT_PLAN``.
"""
import contextlib
import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator, List, Sequence, Tuple

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import einsum_flop_jit, get_shape
from torch import nn

from bftnets.layers.butterfly import ButterflyTransform

__all__ = ['FlopCount', 'count_flops', 'butterfly_flop_jit', 'einsum_macs_jit', 'BUTTERFLY_OP', 'MAC_OPS']

BUTTERFLY_OP = 'prim::PythonOp.ButterflyMultiply'
# fvcore's simplified op names (``aten::`` stripped) that are multiply-adds in the paper's convention
MAC_OPS = ('conv', 'linear', 'addmm', 'matmul', 'mm', 'bmm', 'einsum', 'butterfly')


@dataclass(frozen=True)
class FlopCount:
    """Counts for one forward pass of one image."""
    macs: int  # paper convention: conv + linear multiply-adds, BFT at its factored cost
    fvcore_macs: int  # fvcore's full count (adds BatchNorm, pooling, ...)
    params: int

    @property
    def mflops(self) -> float:
        return self.macs / 1e6

    @property
    def fvcore_mflops(self) -> float:
        return self.fvcore_macs / 1e6


def butterfly_flop_jit(inputs: List[Any], outputs: List[Any]) -> Any:
    """fvcore handle for ``ButterflyMultiply.apply(x, weight, n_out, residual, *factors)``: the rows of the
    ``(B, S, n_in)`` input times ``weight.numel()`` (the factored cost; the execution factors are ignored)."""
    x_shape, weight_shape = get_shape(inputs[0]), get_shape(inputs[1])
    rows = math.prod(x_shape[:-1])
    return Counter({'butterfly': rows * math.prod(weight_shape)})


def einsum_macs_jit(inputs: List[Any], outputs: List[Any]) -> Any:
    """Exact MACs of a two-operand einsum: one multiply-add per combination of all its indices (fvcore's
    own handle estimates through ``numpy.einsum_path`` and rounds). Other einsums go to fvcore's handle."""
    equation = inputs[0].toIValue().replace(' ', '')
    operands = equation.split('->')[0].split(',')
    if len(operands) != 2 or '.' in equation:
        return einsum_flop_jit(inputs, outputs)
    sizes = {}
    for term, value in zip(operands, inputs[1].node().inputs()):
        sizes.update(zip(term, get_shape(value)))
    return math.prod(sizes.values())


@contextlib.contextmanager
def _factored_plans(model: nn.Module) -> Iterator[None]:
    bfts = [m for m in model.modules() if isinstance(m, ButterflyTransform)]
    saved = [m.plan for m in bfts]
    try:
        for m in bfts:
            m.plan = 'factored'
        yield
    finally:
        for m, plan in zip(bfts, saved):
            m.plan = plan


def count_flops(
        model: nn.Module,
        input_size: Sequence[int] = (3, 224, 224),
) -> FlopCount:
    """MACs (paper convention), fvcore's full count and the parameter count of ``model`` on one
    ``input_size`` image (C, H, W). The model is traced in eval mode on a zero input, then restored."""
    if len(input_size) != 3 or min(input_size) < 1:
        raise ValueError(f'input_size must be (channels, height, width), got {tuple(input_size)}')
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    inputs: Tuple[torch.Tensor, ...] = (torch.zeros(1, *input_size, device=device),)
    was_training = model.training
    model.eval()
    fvcore_logger = logging.getLogger('fvcore')
    level = fvcore_logger.level
    fvcore_logger.setLevel(logging.ERROR)  # fvcore warns about every op it does not count
    try:
        with _factored_plans(model), torch.no_grad():
            analysis = FlopCountAnalysis(model, inputs)
            analysis.set_op_handle(**{BUTTERFLY_OP: butterfly_flop_jit, 'aten::einsum': einsum_macs_jit})
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
            by_op = analysis.by_operator()
            full = analysis.total()
    finally:
        fvcore_logger.setLevel(level)
        model.train(was_training)
    macs = sum(count for op, count in by_op.items() if op in MAC_OPS)
    params = sum(p.numel() for p in model.parameters())
    return FlopCount(macs=int(macs), fvcore_macs=int(full), params=params)
