"""The butterfly multiply: the math of the Butterfly Transform, apart from any nn.Module.

Conventions (paper Eq. 3-5, layer-by-layer form):

* The transform runs on ``N`` channels written as mixed-radix digits ``radices`` (most significant
  first, ``prod(radices) == N``). For ``N = k**L`` the radices are ``[k] * L``: exactly the paper's B(N, k).
* Layer ``t`` mixes digit ``t``: the channel axis is viewed as ``(P, r, Q)`` with ``P = prod(radices[:t])``
  and ``Q = prod(radices[t+1:])`` and every ``(p, q)`` position gets its own ``r x r`` matrix. Its weights
  are a ``(P, Q, r_out, r_in)`` tensor (``r * N`` numbers). All layers live in one flat parameter.
* Activations are ``(B, S, C)`` views of NCHW or channels_last tensors (batch, pixels, channels); the
  engine below moves them into a channel-major ``(N, B*S)`` "column" layout, where every pass is one bmm.

Execution strategies are *groupings* of consecutive layers: a group of layers ``[t0, t1)`` is merged into
one factor with ``G x G`` blocks (``G = prod(radices[t0:t1])``). ``[1] * L`` is the factored execution
(k MACs per channel per layer), ``[L]`` is the dense fold (one GEMM with the folded (out, in) matrix, in the
input's own layout), anything between trades passes over the activations for MACs. The weights stay the
paper's factors; only the execution groups them (the plan: :mod:`bftnets.ops.plan`).
"""
import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    'butterfly_radices', 'factor_shapes', 'split_factors', 'apply_factor', 'merge_factors', 'grouped_factors',
    'tile_channels', 'fold_channels', 'folded_matrix', 'dense_matmul', 'column_passes', 'to_columns',
    'from_columns', 'fold_rows', 'column_butterfly', 'butterfly_multiply', 'ButterflyMultiply',
]
def _prime_factors(n: int) -> List[int]:
    factors, p = [], 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    if n > 1:
        factors.append(n)
    return factors


def butterfly_radices(n: int, base: int) -> List[int]:
    """Digits (most significant first) of the smallest ``N >= n`` whose butterfly costs O(N log N).

    ``N`` is the smallest integer >= ``n`` with no prime factor above ``max(base, 5)``; it is written as
    ``base`` digits first, then the leftover primes packed greedily into digits no larger than ``base``
    (a leftover prime above ``base``, e.g. 5 for base 4, is its own digit). ``n = base**L`` gives
    ``[base] * L``; 24 -> [4, 3, 2]; 40 -> [4, 5, 2]; 97 -> N = 100 = [4, 5, 5].
    """
    if n < 1 or base < 2:
        raise ValueError(f'butterfly_radices needs n >= 1 and base >= 2, got n={n}, base={base}')
    if n == 1:
        return [1]
    max_prime = max(base, 5)
    size = n
    while max(_prime_factors(size)) > max_prime:
        size += 1
    radices = []
    while size % base == 0:
        radices.append(base)
        size //= base
    digits: List[int] = []
    for p in sorted(_prime_factors(size), reverse=True):
        for i, d in enumerate(digits):
            if d * p <= base:
                digits[i] = d * p
                break
        else:
            digits.append(p)
    return radices + sorted(digits, reverse=True)


def factor_shapes(radices: List[int]) -> List[Tuple[int, int, int]]:
    """``(P, Q, r)`` of every butterfly layer: layer t holds P * Q blocks of r x r."""
    shapes: List[Tuple[int, int, int]] = []
    for t, r in enumerate(radices):
        outer, inner = 1, 1
        for d in radices[:t]:
            outer *= d
        for d in radices[t + 1:]:
            inner *= d
        shapes.append((outer, inner, r))
    return shapes


def split_factors(weight: Tensor, radices: List[int]) -> List[Tensor]:
    """Views of the weight (any shape with ``N * sum(radices)`` elements) as one ``(P, Q, r_out, r_in)``
    tensor per layer."""
    weight = weight.reshape(-1)
    factors: List[Tensor] = []
    offset = 0
    for outer, inner, r in factor_shapes(radices):
        size = outer * inner * r * r
        factors.append(weight[offset:offset + size].view(outer, inner, r, r))
        offset += size
    return factors


def apply_factor(x: Tensor, factor: Tensor) -> Tensor:
    """One (possibly merged) butterfly factor on ``(M, N)`` rows: block ``(p, q)`` mixes axis 1 of (P, G, Q).

    The plain einsum form (used to merge factors and by the ``inner_act`` ablation); activations go through
    :func:`run_passes`, which avoids einsum's permute copies."""
    outer, inner, size = factor.shape[0], factor.shape[1], factor.shape[2]
    rows = x.shape[0]
    y = torch.einsum('mpjq,pqij->mpiq', x.reshape(rows, outer, size, inner), factor)
    return y.reshape(rows, outer * size * inner)


def merge_factors(factors: List[Tensor], radices: List[int], start: int, stop: int) -> Tensor:
    """Merge layers ``[start, stop)`` into one ``(P, Q, G, G)`` factor, ``G = prod(radices[start:stop])``.

    Built by pushing the G basis vectors of the merged digit through the layers, so it costs
    ``G * N * sum(radices[start:stop])`` MACs, independent of the batch. Differentiable.
    """
    outer, inner, size = 1, 1, 1
    for d in radices[:start]:
        outer *= d
    for d in radices[start:stop]:
        size *= d
    for d in radices[stop:]:
        inner *= d
    if stop - start == 1:
        return factors[start]
    ref = factors[start]
    basis = torch.eye(size, dtype=ref.dtype, device=ref.device)
    basis = basis[:, None, :, None].expand(size, outer, size, inner).reshape(size, outer * size * inner)
    for t in range(start, stop):
        basis = apply_factor(basis, factors[t])
    # basis[b, (p, a, q)] is entry (a, b) of block (p, q)
    return basis.view(size, outer, size, inner).permute(1, 3, 2, 0).contiguous()


def grouped_factors(weight: Tensor, radices: List[int], groups: List[int]) -> List[Tensor]:
    """The execution factors of a plan: ``groups`` lists how many consecutive layers each pass merges."""
    factors = split_factors(weight, radices)
    merged: List[Tensor] = []
    start = 0
    for g in groups:
        merged.append(merge_factors(factors, radices, start, start + g))
        start += g
    return merged


def tile_channels(x: Tensor, size: int) -> Tensor:
    """Repeat the ``n_in`` input channels cyclically up to ``size`` (channel c reads input c mod n_in)."""
    n = x.shape[-1]
    if n == size:
        return x
    reps = (size + n - 1) // n
    return torch.cat([x] * reps, dim=-1)[..., :size]


def fold_channels(y: Tensor, n_out: int) -> Tensor:
    """Sum the ``size`` butterfly outputs into ``n_out`` channels (output c collects every c + i * n_out)."""
    size = y.shape[-1]
    if size == n_out:
        return y
    chunks = (size + n_out - 1) // n_out
    if chunks * n_out != size:
        y = torch.nn.functional.pad(y, (0, chunks * n_out - size))
    return y.reshape(list(y.shape[:-1]) + [chunks, n_out]).sum(-2)


# ---------------------------------------------------------------------------------------------------------
# The fast engine works on "columns": a contiguous (N, M) tensor, channel-major, one column per pixel.
#
# A pass with digit-group size G views the columns as (G, R, M) (its digit first, R = N / G for the rest)
# and runs ONE torch.bmm over the R blocks: (R, G, G) @ (R, G, M)-view -> (R, G, M). Every operand is a
# valid strided GEMM operand (unit stride along M), so nothing is copied, and the bmm's contiguous output is
# the channels in rotated digit order (rest..., digit): exactly the layout the next pass wants (its digit
# first). After the last pass the digits are back in their original order (a Stockham-style autosort).
# The long M axis is the GEMM's wide dimension, which keeps even 4x4 or 8x8 blocks efficient.
#
# NCHW activations enter and leave the column layout with one copy each (contiguous runs of H*W pixels;
# no copy at all for batch 1); channels_last ones with a 2-D transpose each.
# ---------------------------------------------------------------------------------------------------------


def _rotated(factor: Tensor) -> Tensor:
    """``(P, Q, G, G)`` factor as the ``(Q*P, G, G)`` batch of its column pass (rest digits q before p)."""
    g = factor.shape[2]
    return factor.transpose(0, 1).reshape(-1, g, g)


def _unrotated(grad: Tensor, factor: Tensor) -> Tensor:
    """Inverse of :func:`_rotated` for a gradient."""
    return grad.view(factor.shape[1], factor.shape[0], factor.shape[2], factor.shape[3]).transpose(0, 1)


def column_passes(x: Tensor, factors: List[Tensor]) -> Tensor:
    """The butterfly multiply on contiguous ``(N, M)`` columns: one bmm per execution factor, no copies."""
    n, m = x.shape[0], x.shape[1]
    for factor in factors:
        g = factor.shape[2]
        x = torch.bmm(_rotated(factor), x.view(g, n // g, m).transpose(0, 1)).view(n, m)
    return x


def _compiling() -> bool:
    if torch.jit.is_scripting():
        return False
    return torch.compiler.is_compiling()


def _is_channels_first(x: Tensor) -> bool:
    """``(B, S, C)`` activations stored channel-major (an NCHW view), as opposed to channels-last rows."""
    return x.shape[1] > 1 and x.stride(1) == 1 and x.shape[2] > 1


def to_columns(x: Tensor, size: int) -> Tensor:
    """``(B, S, n)`` activations as contiguous ``(size, B*S)`` columns, tiling channels cyclically to ``size``
    (channel c reads input c mod n)."""
    batch, pixels, n = x.shape[0], x.shape[1], x.shape[2]
    if _is_channels_first(x):
        cols = x.permute(2, 0, 1).reshape(n, batch * pixels)  # a view for batch 1
    else:
        cols = x.reshape(batch * pixels, n).t()
    cols = cols.contiguous()
    if size != n:
        cols = cols.repeat((size + n - 1) // n, 1)[:size]
    return cols


def from_columns(cols: Tensor, batch: int, pixels: int, channels_first: bool,
                 addend: Optional[Tensor] = None) -> Tensor:
    """``(C, B*S)`` columns back to ``(B, S, C)`` activations stored channel-major (NCHW) or as channels-last
    rows, plus ``addend`` (any ``(B, S, C)`` tensor) in the same pass when given."""
    c = cols.shape[0]
    if channels_first:  # one pass: read runs of S pixels, optional add, NCHW write
        # (indexed as (B, C, S): TensorIterator then walks both sides along S; a (B, S, C)-indexed out= view
        # of the same memory ran up to 30x slower)
        out = torch.empty((batch, c, pixels), dtype=cols.dtype, device=cols.device)
        src = cols.view(c, batch, pixels).transpose(0, 1)
        if addend is None:
            out.copy_(src)
        elif _compiling() or (torch.is_grad_enabled() and (src.requires_grad or addend.requires_grad)):
            out.copy_(src).add_(addend.transpose(1, 2))  # out= is neither differentiable nor traceable by dynamo
        else:
            torch.add(src, addend.transpose(1, 2), out=out)
        return out.transpose(1, 2)
    out = cols.t().contiguous().view(batch, pixels, c)  # 2-D transpose: PyTorch's blocked fast path
    return out if addend is None else out.add_(addend)


def fold_rows(cols: Tensor, n_out: int) -> Tensor:
    """Sum ``size`` rows into ``n_out`` (row c collects every c + i * n_out): the output folding, on columns."""
    size = cols.shape[0]
    if size == n_out:
        return cols
    chunks = (size + n_out - 1) // n_out
    if chunks * n_out != size:
        cols = torch.nn.functional.pad(cols, (0, 0, 0, chunks * n_out - size))
    return cols.view(chunks, n_out, cols.shape[1]).sum(0)


def folded_matrix(factor: Tensor, n_in: int, n_out: int, residual: bool) -> Tensor:
    """The ``(n_out, n_in)`` matrix of a one-group (dense) plan: its ``(1, 1, N, N)`` factor, plus the identity
    for the residual, with tiling and folding summed in."""
    size = factor.shape[2]
    m = factor.reshape(size, size)
    if residual:
        m = m + torch.eye(size, dtype=m.dtype, device=m.device)
    return fold_rows(fold_rows(m, n_out).t(), n_in).t()


def _unfold_matrix_grad(grad: Tensor, size: int) -> Tensor:
    """Gradient of :func:`folded_matrix` w.r.t. the ``(N, N)`` factor: entry (a, b) reads (a mod out, b mod in)."""
    rows = torch.arange(size, device=grad.device) % grad.shape[0]
    cols = torch.arange(size, device=grad.device) % grad.shape[1]
    return grad[rows][:, cols].reshape(1, 1, size, size)


def dense_matmul(x: Tensor, matrix: Tensor) -> Tensor:
    """``(B, S, n_in)`` activations times an ``(n_out, n_in)`` matrix, in ``x``'s memory format, with no
    layout copy: NCHW runs as B GEMMs over contiguous pixels, channels-last rows as one GEMM."""
    if _is_channels_first(x):  # bmm, not matmul: matmul would fold (B, S) into rows with a copy
        return torch.bmm(matrix.expand(x.shape[0], matrix.shape[0], matrix.shape[1]), x.transpose(1, 2)).transpose(1, 2)
    return torch.matmul(x, matrix.t())


def column_butterfly(x: Tensor, factors: List[Tensor], n_out: int, residual: bool) -> Tensor:
    """The whole transform (tile, multiply, residual, fold) on ``(B, S, n_in)`` activations -> ``(B, S, n_out)``,
    same memory format as ``x``. A one-group (dense) plan runs as one matmul with the folded matrix. Plain
    autograd (used by TorchScript); :class:`ButterflyMultiply` is the memory-saving version."""
    if len(factors) == 1:
        return dense_matmul(x, folded_matrix(factors[0], x.shape[2], n_out, residual))
    size = 1
    for f in factors:
        size *= f.shape[2]
    channels_first = _is_channels_first(x)
    cols = to_columns(x, size)
    y = column_passes(cols, factors)
    square = x.shape[2] == size and n_out == size
    if residual and not square:
        y = y + cols
    return from_columns(fold_rows(y, n_out), x.shape[0], x.shape[1], channels_first,
                        x if residual and square else None)


class ButterflyMultiply(torch.autograd.Function):
    """The butterfly transform of ``(B, S, n_in)`` activations, saving only its input for backward.

    ``apply(x, weight, n_out, residual, *factors)``: ``factors`` are the execution factors of the plan
    (:func:`grouped_factors` of ``weight``); ``weight`` itself is only passed so that a traced graph shows
    the op's true cost (rows * weight.numel() MACs, the paper's convention) and gets no gradient here (its
    gradient flows through the factors). Backward recomputes the pass inputs from ``x`` (one copy and K-1
    bmm) and then runs two bmm per pass (weight and input gradient): no per-pass activation is kept alive
    between forward and backward, so saved memory is that of a dense 1x1 conv.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, n_out: int, residual: bool, *factors: Tensor) -> Tensor:
        ctx.save_for_backward(x, *factors)
        ctx.n_out, ctx.residual = n_out, residual
        return column_butterfly(x, list(factors), n_out, residual)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, *factors = ctx.saved_tensors
        batch, pixels, n_in = x.shape
        n_out = ctx.n_out
        sizes = [int(f.shape[2]) for f in factors]
        size = math.prod(sizes)
        square = n_in == size and n_out == size
        if len(factors) == 1:
            return (*_dense_backward(ctx, x, grad_out, factors[0]),)
        with torch.no_grad():
            inputs = [to_columns(x, size)]  # recompute every pass's input
            for factor in factors[:-1]:
                inputs.append(column_passes(inputs[-1], [factor]))
            grad = to_columns(grad_out, size)  # folding's backward is tiling
            grad_res = grad if ctx.residual else None
            grads: List[Optional[Tensor]] = [None] * len(factors)
            need_x = ctx.needs_input_grad[0]
            for k in range(len(factors) - 1, -1, -1):
                g = sizes[k]
                rest = size // g
                grad_view = grad.view(rest, g, -1)
                x_view = inputs[k].view(g, rest, -1).transpose(0, 1)
                if ctx.needs_input_grad[4 + k]:
                    grads[k] = _unrotated(torch.bmm(grad_view, x_view.transpose(1, 2)), factors[k])
                inputs[k] = None  # free as we go
                if k == 0 and not need_x:
                    break
                # input gradient written straight into the previous layout (digit first): no copy
                weight_t = _rotated(factors[k]).transpose(1, 2)
                if _compiling():  # dynamo cannot trace a strided out=: bmm, then one copy
                    grad = torch.bmm(weight_t, grad_view).transpose(0, 1).reshape(grad.shape)
                else:
                    prev = torch.empty_like(grad)
                    torch.bmm(weight_t, grad_view, out=prev.view(g, rest, -1).transpose(0, 1))
                    grad = prev
            grad_x = None
            if need_x:
                if grad_res is not None and not square:
                    grad = grad + grad_res
                grad = fold_rows(grad, n_in)  # tiling's backward is folding
                grad_x = from_columns(grad, batch, pixels, _is_channels_first(x),
                                      grad_out if grad_res is not None and square else None)
        return (grad_x, None, None, None, *grads)


def _dense_backward(ctx, x: Tensor, grad: Tensor, factor: Tensor):
    with torch.no_grad():
        matrix = folded_matrix(factor, x.shape[2], ctx.n_out, ctx.residual)
        grad_x = dense_matmul(grad, matrix.t()) if ctx.needs_input_grad[0] else None
        grad_factor = None
        if ctx.needs_input_grad[4]:
            if _is_channels_first(x):
                grad_matrix = torch.bmm(grad.transpose(1, 2), x).sum(0)
            else:
                grad_matrix = grad.reshape(-1, grad.shape[2]).t() @ x.reshape(-1, x.shape[2])
            grad_factor = _unfold_matrix_grad(grad_matrix, factor.shape[2])
    return grad_x, None, None, None, grad_factor


def butterfly_multiply(x: Tensor, factors: List[Tensor], n_out: int = -1, residual: bool = False,
                       weight: Optional[Tensor] = None, recompute: bool = True) -> Tensor:
    """The transform of ``(B, S, n_in)`` activations (or ``(M, n_in)`` rows) by execution ``factors`` from
    :func:`grouped_factors`: tile to N channels, multiply, optional first-to-last residual, fold to ``n_out``
    (default N). ``recompute`` (the default) saves only ``x`` for backward."""
    rows = x.dim() == 2
    if rows:
        x = x.unsqueeze(0)
    if n_out < 0:
        n_out = 1
        for f in factors:
            n_out *= f.shape[2]
    # (dynamo cannot trace the Function's forward without autograd: compiled inference runs the plain path)
    if not torch.jit.is_scripting() and recompute and (torch.is_grad_enabled() or not _compiling()):
        y = ButterflyMultiply.apply(x, factors[0] if weight is None else weight, n_out, residual, *factors)
    else:
        y = column_butterfly(x, factors, n_out, residual)
    return y.squeeze(0) if rows else y
