"""Execution plans for the butterfly multiply: how consecutive butterfly layers are grouped into passes.

A plan is a list of group sizes summing to L (see :mod:`bftnets.ops.butterfly`). Fewer, larger groups make
fewer passes over the activations but cost more MACs (a pass with G x G blocks costs G MACs per channel).
The choice is made per (radices, rows, dtype, device, training) by a cost model and cached.

Override for experiments with ``ButterflyTransform(plan=...)`` or the ``BFT_PLAN`` environment variable:
``factored`` (one pass per layer), ``merged`` (the cost model's grouping), ``dense`` (one N x N pass), or an
explicit comma list such as ``2,2,1``.
"""
import functools
import os
from typing import List, Optional, Tuple

import torch

__all__ = ['choose_groups', 'parse_plan', 'plan_cost']

# Cost of one pass over the activations, in MAC-equivalents per channel per row: the permute copies and
# the small-matmul overheads of a pass, fitted on CPU float32 (benchmarks/bft_layer.py prints the fit).
PASS_COST = {'cpu': 24.0, 'cuda': 8.0}
MAX_BLOCK = 64  # larger merged blocks waste MACs quadratically


def plan_cost(radices: List[int], groups: List[int], device_type: str = 'cpu') -> float:
    """Modelled cost per row per channel of running ``groups`` over ``radices``."""
    cost, start = 0.0, 0
    for g in groups:
        block = 1
        for d in radices[start:start + g]:
            block *= d
        cost += block + PASS_COST.get(device_type, 16.0)
        start += g
    return cost


def _compositions(n: int):
    if n == 0:
        yield ()
        return
    for first in range(1, n + 1):
        for rest in _compositions(n - first):
            yield (first,) + rest


@functools.lru_cache(maxsize=None)
def _best_groups(radices: Tuple[int, ...], device_type: str) -> Tuple[int, ...]:
    best, best_cost = None, float('inf')
    for groups in _compositions(len(radices)):
        start, ok = 0, True
        for g in groups:
            block = 1
            for d in radices[start:start + g]:
                block *= d
            ok = ok and (g == 1 or block <= MAX_BLOCK)
            start += g
        cost = plan_cost(list(radices), list(groups), device_type)
        if ok and cost < best_cost:
            best, best_cost = groups, cost
    return best


def parse_plan(plan: str, radices: List[int], device_type: str = 'cpu') -> List[int]:
    """Groups for a plan name or explicit comma list; raises ValueError naming the valid choices."""
    layers = len(radices)
    if plan == 'factored':
        return [1] * layers
    if plan == 'dense':
        return [layers]
    if plan in ('merged', 'auto'):
        return list(_best_groups(tuple(radices), device_type))
    try:
        groups = [int(g) for g in plan.split(',')]
    except ValueError:
        groups = []
    if not groups or min(groups) < 1 or sum(groups) != layers:
        raise ValueError(
            f"unknown BFT plan {plan!r} for radices {radices}: use 'factored', 'merged', 'dense', "
            f"or comma-separated group sizes summing to {layers} (e.g. {','.join(['1'] * layers)})")
    return groups


def choose_groups(radices: List[int], rows: int, dtype: torch.dtype, device_type: str, training: bool,
                  plan: Optional[str] = None) -> List[int]:
    """The grouping to run: explicit ``plan``, else ``BFT_PLAN``, else the cost model."""
    plan = plan or os.environ.get('BFT_PLAN') or 'auto'
    return parse_plan(plan, radices, device_type)
