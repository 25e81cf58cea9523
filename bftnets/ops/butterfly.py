"""The butterfly multiply: the math of the Butterfly Transform, apart from any nn.Module.

Conventions (paper Eq. 3-5, layer-by-layer form):

* The transform runs on ``N`` channels written as mixed-radix digits ``radices`` (most significant
  first, ``prod(radices) == N``). For ``N = k**L`` the radices are ``[k] * L``: exactly the paper's B(N, k).
* Layer ``t`` mixes digit ``t``: the channel axis is viewed as ``(P, r, Q)`` with ``P = prod(radices[:t])``
  and ``Q = prod(radices[t+1:])`` and every ``(p, q)`` position gets its own ``r x r`` matrix. Its weights
  are a ``(P, Q, r_out, r_in)`` tensor (``r * N`` numbers). All layers live in one flat parameter.
* Activations are 2-D ``(M, N)``: one row per pixel ("channels last"), which is how every execution
  strategy wants them.

Execution strategies are *groupings* of consecutive layers: a group of layers ``[t0, t1)`` is merged into
one factor with ``G x G`` blocks (``G = prod(radices[t0:t1])``). ``[1] * L`` is the factored execution
(k MACs per channel per layer), ``[L]`` is the dense fold (one N x N matrix), anything between trades
passes over the activations for MACs. The weights stay the paper's factors; only the execution groups them.
"""
from typing import List, Tuple

import torch
from torch import Tensor

__all__ = [
    'butterfly_radices', 'factor_shapes', 'split_factors', 'apply_factor', 'merge_factors',
    'grouped_factors', 'tile_channels', 'fold_channels', 'butterfly_multiply', 'ButterflyMultiply',
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
    """One (possibly merged) butterfly factor on ``(M, N)`` rows: block ``(p, q)`` mixes axis 1 of (P, G, Q)."""
    outer, inner, size = factor.shape[0], factor.shape[1], factor.shape[2]
    rows = x.shape[0]
    y = torch.einsum('mpjq,pqij->mpiq', x.reshape(rows, outer, size, inner), factor)
    return y.reshape(rows, outer * size * inner)


def _factor_grad(grad_out: Tensor, x: Tensor, factor: Tensor) -> Tuple[Tensor, Tensor]:
    """Gradients of :func:`apply_factor` w.r.t. its input and its factor."""
    outer, inner, size = factor.shape[0], factor.shape[1], factor.shape[2]
    rows = x.shape[0]
    g = grad_out.reshape(rows, outer, size, inner)
    grad_x = torch.einsum('mpiq,pqij->mpjq', g, factor).reshape(rows, outer * size * inner)
    grad_factor = torch.einsum('mpiq,mpjq->pqij', g, x.reshape(rows, outer, size, inner))
    return grad_x, grad_factor


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
    n = x.shape[1]
    if n == size:
        return x
    reps = (size + n - 1) // n
    return x.repeat(1, reps)[:, :size]


def fold_channels(y: Tensor, n_out: int) -> Tensor:
    """Sum the ``size`` butterfly outputs into ``n_out`` channels (output c collects every c + i * n_out)."""
    size = y.shape[1]
    if size == n_out:
        return y
    chunks = (size + n_out - 1) // n_out
    if chunks * n_out != size:
        y = torch.nn.functional.pad(y, (0, chunks * n_out - size))
    return y.view(y.shape[0], chunks, n_out).sum(1)


class ButterflyMultiply(torch.autograd.Function):
    """Apply a chain of factors keeping only the input for backward (intermediates are recomputed).

    Saved memory is one activation (the input), as for a dense 1x1 conv, instead of one per pass.
    """

    @staticmethod
    def forward(ctx, x: Tensor, *factors: Tensor) -> Tensor:
        ctx.save_for_backward(x, *factors)
        for factor in factors:
            x = apply_factor(x, factor)
        return x

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, *factors = ctx.saved_tensors
        inputs = [x]
        with torch.no_grad():
            for factor in factors[:-1]:
                inputs.append(apply_factor(inputs[-1], factor))
        grads = [None] * len(factors)
        for i in range(len(factors) - 1, -1, -1):
            grad_out, grads[i] = _factor_grad(grad_out, inputs[i], factors[i])
            inputs[i] = None  # free as we go
        return (grad_out, *grads)


def butterfly_multiply(x: Tensor, factors: List[Tensor], recompute: bool = True) -> Tensor:
    """``x @ (F_last ... F_1 F_0)^T`` for ``(M, N)`` rows and execution factors from :func:`grouped_factors`."""
    if not torch.jit.is_scripting():
        if recompute:
            return ButterflyMultiply.apply(x, *factors)
    for factor in factors:
        x = apply_factor(x, factor)
    return x
