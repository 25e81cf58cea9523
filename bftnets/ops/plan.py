"""Execution plans for the butterfly multiply: how consecutive butterfly layers are grouped into passes.

A plan is a list of group sizes summing to L (see :mod:`bftnets.ops.butterfly`). A group of layers whose
digits multiply to G runs as one column pass with G x G blocks: G MACs per element instead of sum(radices),
but one pass over the activations instead of several. The choice is made per (radices, rows, dtype, device,
training) and cached:

* ``auto`` (default): the cost model below, calibrated on CPU float32 with the column engine:
  a pass over ``E = N * rows`` elements with G x G blocks takes ``E * (PASS_COST + G) + CALL_COST``
  MAC-equivalents (``PASS_COST`` is the memory traffic of a pass, ``CALL_COST`` the fixed per-call cost),
  plus copies into and out of the column layout; the one-group (dense) plan is one GEMM of ``E * N`` in the
  input's own layout (no copies), so it wins at small N where the copies cost more than the MACs saved.
  Measured on a 2-core AMD EPYC, 1 thread: G = 4 .. 256 bmm passes fit ``0.25 ns + G * 0.021 ns`` per element
  (47 GMAC/s; PASS_COST ~ 12) and one call costs ~15 us (~7e5 MACs). A training step runs every pass about
  four times (forward, recomputation in backward, input and weight gradients) and builds merged factors from
  the weights with autograd (forward and backward); inference reuses cached merged factors.
* ``tune``: time the cost model's best few candidates once on this machine, per key, and keep the fastest.
* ``factored`` (one pass per layer), ``merged`` (the cost model's grouping, same as ``auto``), ``dense``
  (one N x N pass), or an explicit comma list such as ``2,2,1``.

Override with ``ButterflyTransform(plan=...)`` or the ``BFT_PLAN`` environment variable.
"""
import functools
import os
import time
from typing import Dict, List, Optional, Tuple

import torch

__all__ = ['choose_groups', 'parse_plan', 'plan_cost', 'candidate_groups', 'PLAN_NAMES']

PLAN_NAMES = ('auto', 'merged', 'factored', 'dense', 'tune')
# (PASS_COST per element, CALL_COST per call), in MAC-equivalents; CUDA values are an untested guess
# (faster memory relative to its MAC rate, higher launch latency): use BFT_PLAN=tune there.
CONSTANTS = {'cpu': (12.0, 7e5), 'cuda': (4.0, 5e6)}
DEFAULT_CONSTANTS = (12.0, 7e5)


def _block(radices: List[int], start: int, stop: int) -> int:
    size = 1
    for d in radices[start:stop]:
        size *= d
    return size


def plan_cost(radices: List[int], groups: List[int], rows: int = 1024, device_type: str = 'cpu',
              training: bool = False) -> float:
    """Modelled cost (MAC-equivalents) of running ``groups`` over ``rows`` rows of ``N = prod(radices)``."""
    pass_cost, call_cost = CONSTANTS.get(device_type, DEFAULT_CONSTANTS)
    n = _block(radices, 0, len(radices))
    elements = float(n * rows)
    merge = 0.0
    start = 0
    for g in groups:
        block = _block(radices, start, start + g)
        if g > 1:  # building the merged factor: G basis vectors through g layers, one einsum each
            merge += block * n * sum(radices[start:start + g]) + g * call_cost
        start += g
    if len(groups) == 1:  # dense: one GEMM with the folded matrix in the input's own layout, no copies
        gemm = elements * n + call_cost
        return 3 * gemm + 3 * merge if training else gemm
    passes = [elements * (pass_cost + _block(radices, s, s + g)) + call_cost
              for s, g in zip([sum(groups[:i]) for i in range(len(groups))], groups)]
    copies = elements * pass_cost  # into and out of the column layout
    if training:  # forward, recompute (all but the last pass), input and weight gradients; merge fwd + bwd
        return 5 * copies + 4 * sum(passes) - passes[-1] + 3 * merge
    return 2 * copies + sum(passes)  # inference: merged factors are cached between calls


def _compositions(n: int):
    if n == 0:
        yield ()
        return
    for first in range(1, n + 1):
        for rest in _compositions(n - first):
            yield (first,) + rest


@functools.lru_cache(maxsize=4096)
def _ranked(radices: Tuple[int, ...], rows: int, device_type: str, training: bool) -> Tuple[Tuple[int, ...], ...]:
    """Every grouping of ``radices``, cheapest first under the cost model (ties: fewer passes)."""
    ranked = sorted(_compositions(len(radices)),
                    key=lambda groups: (plan_cost(list(radices), list(groups), rows, device_type, training),
                                        len(groups)))
    return tuple(ranked)


def candidate_groups(radices: List[int], rows: int, device_type: str = 'cpu', training: bool = False,
                     count: int = 4) -> List[List[int]]:
    """The cost model's ``count`` best groupings."""
    return [list(g) for g in _ranked(tuple(radices), rows, device_type, training)[:count]]


def parse_plan(plan: str, radices: List[int], device_type: str = 'cpu', rows: int = 1024,
               training: bool = False) -> List[int]:
    """Groups for a plan name or explicit comma list; raises ValueError naming the valid choices."""
    layers = len(radices)
    if plan == 'factored':
        return [1] * layers
    if plan == 'dense':
        return [layers]
    if plan in ('merged', 'auto', 'tune'):
        return candidate_groups(radices, rows, device_type, training, 1)[0]
    try:
        groups = [int(g) for g in plan.split(',')]
    except ValueError:
        groups = []
    if not groups or min(groups) < 1 or sum(groups) != layers:
        raise ValueError(
            f"unknown BFT plan {plan!r} for radices {radices}: use 'auto', 'tune', 'factored', 'merged', 'dense', "
            f"or comma-separated group sizes summing to {layers} (e.g. {','.join(['1'] * layers)})")
    return groups


# (radices, rows, dtype, device type, training) -> measured best groups
_TUNED: Dict[Tuple[Tuple[int, ...], int, torch.dtype, str, bool], Tuple[int, ...]] = {}


def _time_groups(radices: List[int], groups: List[int], rows: int, dtype: torch.dtype, device: str,
                 training: bool, repeats: int = 5) -> float:
    from bftnets.ops.butterfly import butterfly_multiply, grouped_factors  # local: plan.py stays import-light
    n = _block(radices, 0, len(radices))
    weight = torch.randn(n * sum(radices), dtype=dtype, device=device, requires_grad=training)
    x = torch.randn(1, n, rows, dtype=dtype, device=device).transpose(1, 2).requires_grad_(training)

    def step():
        with torch.set_grad_enabled(training):
            y = butterfly_multiply(x, grouped_factors(weight, radices, groups), n, True, weight)
            if training:
                y.backward(torch.ones_like(y))

    times = []
    for i in range(repeats + 1):
        if device == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device == 'cuda':
            torch.cuda.synchronize()
        if i:  # the first run warms up
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def tuned_groups(radices: List[int], rows: int, dtype: torch.dtype, device_type: str, training: bool) -> List[int]:
    """Measure the cost model's best candidates once per key (rows rounded up to a power of two) and cache."""
    rows = 1 << max(0, rows - 1).bit_length()
    key = (tuple(radices), rows, dtype, device_type, training)
    if key not in _TUNED:
        candidates = candidate_groups(radices, rows, device_type, training, 4)
        times = [_time_groups(radices, g, rows, dtype, device_type, training) for g in candidates]
        _TUNED[key] = tuple(candidates[times.index(min(times))])
    return list(_TUNED[key])


@torch.compiler.assume_constant_result
def choose_groups(radices: List[int], rows: int, dtype: torch.dtype, device_type: str, training: bool,
                  plan: Optional[str] = None) -> List[int]:
    """The grouping to run: explicit ``plan``, else ``BFT_PLAN``, else the cost model (``auto``)."""
    plan = plan or os.environ.get('BFT_PLAN') or 'auto'
    if plan == 'tune' and not torch.compiler.is_compiling():
        return tuned_groups(radices, rows, dtype, device_type, training)
    return parse_plan(plan, radices, device_type, rows, training)
