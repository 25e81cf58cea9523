"""Optimiser parameter groups and the learning-rate schedules of the paper's Appendix A."""
import math
from typing import Dict, List, Optional, Sequence

import torch
from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler, PolyLRScheduler
from timm.scheduler.scheduler import Scheduler
from torch import nn

from bftnets.layers import butterfly_parameters
from bftnets.training.errors import ConfigError

__all__ = ['param_groups', 'create_optimizer', 'create_scheduler']


def param_groups(model: nn.Module, weight_decay: float, bft_weight_decay: Optional[float] = None) -> List[Dict]:
    """Three groups: dense weights (``weight_decay``), BFT weights (``bft_weight_decay``, defaulting to
    ``weight_decay``), and BatchNorm/bias/other 1-D parameters (no decay, timm's convention).

    BFT weights are found by type (the ``weight`` of every :class:`bftnets.ButterflyTransform`), never by
    name or shape, so that they get their own decay whatever their layout.
    """
    bft_wd = weight_decay if bft_weight_decay is None else bft_weight_decay
    bft_ids = {id(p) for p in butterfly_parameters(model).values()}
    dense, bft, no_decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in bft_ids:
            bft.append(p)
        elif p.ndim <= 1 or name.endswith('.bias'):
            no_decay.append(p)
        else:
            dense.append(p)
    groups = [dict(params=dense, weight_decay=weight_decay, group='dense'),
              dict(params=bft, weight_decay=bft_wd, group='bft'),
              dict(params=no_decay, weight_decay=0.0, group='no_decay')]
    return [g for g in groups if g['params']]


def _check_numbers(group: str, minimum: float = 0.0, **values) -> None:
    """ConfigError for a value that is not a number >= ``minimum`` (e.g. ``optim.lr=abc``), naming the key."""
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
            raise ConfigError(f'{group}.{key} must be a number >= {minimum:g}, got {value!r}')


def create_optimizer(model: nn.Module, name: str = 'sgd', lr: float = 0.1, momentum: float = 0.9,
                     nesterov: bool = False, weight_decay: float = 1e-5,
                     bft_weight_decay: Optional[float] = None) -> torch.optim.Optimizer:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ConfigError(f'optim.lr must be a number > 0, got {lr!r}')
    _check_numbers('optim', momentum=momentum, weight_decay=weight_decay, bft_weight_decay=bft_weight_decay)
    groups = param_groups(model, weight_decay, bft_weight_decay)
    if name == 'sgd':
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if name == 'adamw':
        return torch.optim.AdamW(groups, lr=lr)
    raise ConfigError(f'unknown optimiser {name!r} (optim.name): use sgd or adamw')


def create_scheduler(optimizer: torch.optim.Optimizer, name: str, epochs: int, steps_per_epoch: int,
                     warmup_epochs: float = 0, warmup_lr: float = 0.0, min_lr: float = 0.0,
                     milestones: Sequence[float] = (), gamma: float = 0.1) -> Scheduler:
    """A timm scheduler stepped once per optimiser step (``step_update(global_step)``), epochs given as
    epochs and converted to steps here:

    - ``constant``: the base lr throughout.
    - ``multistep``: base lr, times ``gamma`` at each epoch in ``milestones`` (MobileNetV1: [140, 160]).
    - ``linear``: base lr decaying linearly to 0 at the last step (ShuffleNetV2).
    - ``cosine``: ``warmup_epochs`` linear warm-up from ``warmup_lr`` to the base lr, then cosine to
      ``min_lr`` at the last step (MobileNetV3: 5 epochs 0.1 -> 0.5, then 0.5 -> 0).
    """
    _check_numbers('sched', warmup_epochs=warmup_epochs, warmup_lr=warmup_lr, min_lr=min_lr, gamma=gamma)
    _check_numbers('sched', milestones=min(milestones, default=None))
    total = epochs * steps_per_epoch
    warmup = round(warmup_epochs * steps_per_epoch)
    common = dict(t_in_epochs=False, warmup_t=warmup, warmup_lr_init=warmup_lr, warmup_prefix=True)
    if warmup >= total and name != 'constant':
        raise ConfigError(f'sched.warmup_epochs ({warmup_epochs}) must be shorter than the run ({epochs} epochs)')
    if name == 'constant':
        return MultiStepLRScheduler(optimizer, decay_t=[], decay_rate=1.0, **common)
    if name == 'multistep':
        bad = [m for m in milestones if not 0 < m < epochs]
        if bad:
            raise ConfigError(f'sched.milestones {bad} fall outside the run of {epochs} epochs')
        # timm decays when t + 1 reaches a milestone (epoch-end stepping); +1 so that the first step of the
        # milestone epoch is the first at the lower lr. Milestones count from step 0, warm-up included.
        return MultiStepLRScheduler(optimizer, decay_t=[round(m * steps_per_epoch) + 1 for m in milestones],
                                    decay_rate=gamma, **{**common, 'warmup_prefix': False})
    if name == 'linear':
        return PolyLRScheduler(optimizer, t_initial=total - warmup, power=1.0, lr_min=min_lr, **common)
    if name == 'cosine':
        return CosineLRScheduler(optimizer, t_initial=total - warmup, lr_min=min_lr, **common)
    raise ConfigError(f'unknown schedule {name!r} (sched.name): use constant, multistep, linear or cosine')


def steps_per_epoch(total_steps: int, epochs: int) -> int:
    return max(1, math.ceil(total_steps / max(1, epochs)))
