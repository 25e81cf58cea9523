"""Model size and cost: parameters, MFLOPs (paper convention) and inference throughput."""
import time
from typing import Dict

import torch
from torch import nn

__all__ = ['count_params', 'count_mflops', 'measure_throughput', 'describe_model']


def count_params(model: nn.Module) -> int:
    # EMA copies and buffers are not parameters of the network
    return sum(p.numel() for p in model.parameters())


def count_mflops(model: nn.Module, resolution: int, in_chans: int) -> Dict[str, float]:
    """Millions of multiply-adds for one image: the paper's convention (conv + linear, BFT at its factored
    cost) and fvcore's full count (adds BatchNorm, pooling), both from :func:`bftnets.flops.count_flops`."""
    from bftnets.flops import count_flops
    count = count_flops(model, (in_chans, resolution, resolution))
    return {'mflops': count.macs / 1e6, 'fvcore_mflops': count.fvcore_macs / 1e6}


@torch.no_grad()
def measure_throughput(model: nn.Module, resolution: int, in_chans: int, batch_size: int = 64,
                       seconds: float = 2.0) -> float:
    """Inference images per second on random input, after one warm-up batch."""
    device = next(model.parameters()).device
    x = torch.randn(batch_size, in_chans, resolution, resolution, device=device)
    was_training = model.training
    model.eval()
    model(x)
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model(x)
        images += batch_size
    if device.type == 'cuda':
        torch.cuda.synchronize()
    model.train(was_training)
    return images / (time.perf_counter() - start)


def describe_model(name: str, model: nn.Module, resolution: int, in_chans: int) -> Dict[str, float]:
    flops = count_mflops(model, resolution, in_chans)
    return {'model': name, 'params': count_params(model), 'mflops': round(flops['mflops'], 3),
            'fvcore_mflops': round(flops['fvcore_mflops'], 3), 'resolution': resolution, 'in_chans': in_chans}
