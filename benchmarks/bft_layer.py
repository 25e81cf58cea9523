"""BFT layer vs the dense 1x1 convolution it replaces, at the MobileNet shapes.

    python -m benchmarks.bft_layer            # full run, writes benchmarks/results/bft_layer.md
    python -m benchmarks.bft_layer --quick    # smoke run (tiny sizes, few repeats), results/bft_layer_quick.md

For every width n (spatial size as in MobileNet: 64@56, 128@28, 256@14, 512@14, 1024@7), float32 CPU:
* training: batch 32, forward + backward of ``ButterflyTransform(n, n)`` (base 4, residual) vs
  ``nn.Conv2d(n, n, 1, bias=False)``; the dense baseline is the faster of NCHW and channels_last;
* inference: batch 1 forward (no grad, eval) vs the same conv;
* peak memory of a training step (tensors created during the step, exact allocator sizes).
Ratios are BFT / dense measured in the same run, timings interleaved, median of ``--repeats``.
"""
import argparse
import sys

import torch
from torch import nn

from benchmarks.common import machine, markdown_table, peak_memory, time_interleaved, write_result
from bftnets import ButterflyTransform

SHAPES = [(64, 56), (128, 28), (256, 14), (512, 14), (1024, 7)]
QUICK_SHAPES = [(16, 8), (64, 4)]
TARGETS = 'fwd+bwd <= 0.5x dense at n = 256 and <= 0.25x at n = 1024; inference <= 0.5x at n >= 256; memory <= 1.5x'


def train_step(module: nn.Module, x: torch.Tensor):
    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).sum().backward()
    return step


def infer(module: nn.Module, x: torch.Tensor):
    def run():
        with torch.no_grad():
            module(x)
    return run


def bench_width(n: int, spatial: int, batch: int, repeats: int) -> dict:
    torch.manual_seed(n)
    conv = nn.Conv2d(n, n, 1, bias=False)
    bft = ButterflyTransform(n, n)
    x = torch.randn(batch, n, spatial, spatial, requires_grad=True)
    x_cl = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    train = time_interleaved({
        'conv': train_step(conv, x), 'conv_cl': train_step(conv, x_cl), 'bft': train_step(bft, x)}, repeats)
    one = torch.randn(1, n, spatial, spatial)
    one_cl = one.to(memory_format=torch.channels_last)
    conv.eval(), bft.eval()
    inference = time_interleaved({
        'conv': infer(conv, one), 'conv_cl': infer(conv, one_cl), 'bft': infer(bft, one)}, repeats * 4)
    conv.train(), bft.train()
    memory = {'conv': peak_memory(train_step(conv, x)), 'bft': peak_memory(train_step(bft, x))}
    rows = batch * spatial * spatial
    plan_train = bft.groups(x.flatten(2).transpose(1, 2))
    bft.eval()
    plan_infer = bft.groups(one.flatten(2).transpose(1, 2))
    return dict(n=n, spatial=spatial, rows=rows, train=train, inference=inference, memory=memory,
                plan_train=plan_train, plan_infer=plan_infer, radices=bft.radices)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='tiny sizes and few repeats (smoke run)')
    parser.add_argument('--repeats', type=int, default=None, help='timed repeats per contender (median)')
    parser.add_argument('--batch', type=int, default=None, help='training batch (default 32; quick: 2)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads (default 1: stable ratios on a shared machine; 0 = torch default)')
    parser.add_argument('--out', default=None, help='results directory (default benchmarks/results)')
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    repeats = args.repeats or (2 if args.quick else 15)
    batch = args.batch or (2 if args.quick else 32)
    rows = []
    for n, spatial in shapes:
        r = bench_width(n, spatial, batch, repeats)
        dense_train = min(r['train']['conv'], r['train']['conv_cl'])
        dense_inf = min(r['inference']['conv'], r['inference']['conv_cl'])
        rows.append([
            n, f'{spatial}x{spatial}', ','.join(map(str, r['plan_train'])), ','.join(map(str, r['plan_infer'])),
            f"{r['train']['conv'] * 1e3:.2f}", f"{r['train']['conv_cl'] * 1e3:.2f}", f"{r['train']['bft'] * 1e3:.2f}",
            f"**{r['train']['bft'] / dense_train:.2f}x**",
            f"{r['inference']['conv'] * 1e3:.3f}", f"{r['inference']['conv_cl'] * 1e3:.3f}",
            f"{r['inference']['bft'] * 1e3:.3f}", f"**{r['inference']['bft'] / dense_inf:.2f}x**",
            f"{r['memory']['conv'] / 2 ** 20:.1f}", f"{r['memory']['bft'] / 2 ** 20:.1f}",
            f"**{r['memory']['bft'] / r['memory']['conv']:.2f}x**",
        ])
        print(f'n={n}: train {rows[-1][7]}, inference {rows[-1][11]}, memory {rows[-1][14]}', flush=True)
    header = ['n', 'HxW', 'plan train', 'plan infer', f'dense train ms (NCHW)', 'dense train ms (CL)',
              'BFT train ms', 'train ratio', 'dense infer ms (NCHW)', 'dense infer ms (CL)', 'BFT infer ms',
              'infer ratio', 'dense MiB', 'BFT MiB', 'memory ratio']
    table = markdown_table(header, rows)
    text = (f'# BFT layer vs dense 1x1 conv ({"quick smoke run" if args.quick else "full run"})\n\n'
            f'`python -m benchmarks.bft_layer{" --quick" if args.quick else ""}` on {machine()}.\n'
            f'Training: batch {batch}, forward + backward; inference: batch 1, no grad. float32, NCHW input to '
            f'BFT; ratios are BFT / the faster dense layout (NCHW or channels_last, CL), medians of {repeats} '
            f'interleaved repeats (inference: {repeats * 4}). Memory: peak bytes allocated during one training '
            f'step (profiler memory timeline). Targets: {TARGETS}.\n\n{table}\n')
    print('\n' + table)
    path = write_result('bft_layer_quick' if args.quick else 'bft_layer', text, *([args.out] if args.out else []))
    print(f'\nwrote {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
