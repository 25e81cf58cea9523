"""Every paper pair (SPEC.md section 3): BFT model vs its FLOP-matched baseline, same row.

    python -m benchmarks.models                      # full run -> benchmarks/results/models.md + latency_vs_mflops.png
    python -m benchmarks.models --quick              # smoke run: 2 pairs at 32x32, batch 2 -> models_quick.md
    python -m benchmarks.models --backends eager onnxruntime   # skip torch.compile (slow to compile on CPU)

Per model, float32 CPU, NCHW: training images/s (batch 32: forward, cross-entropy, backward, SGD step),
batch-1 inference latency eager and deployed (the best of torch.compile and ONNX Runtime on the BN/BFT-folded
export of bftnets.export), peak memory of a training step, params, MFLOPs (paper convention, bftnets.flops).
The two models of a pair are timed interleaved in the same run; ratios are BFT / baseline.
"""
import argparse
import statistics
import sys
import tempfile
import time
import warnings
from typing import Dict, List, Tuple

import timm
import torch

import bftnets  # noqa: F401  (registers the models)
from benchmarks.common import RESULTS, machine, markdown_table, peak_memory, time_interleaved, write_result
from bftnets.flops import count_flops

# (label, paper MFLOPs baseline / BFT, (baseline, res), (bft, res))
PAIRS = [
    ('MobileNetV1 14M', (14, 14), ('mobilenetv1_025', 128), ('mobilenetv1_100_bft', 96)),
    ('MobileNetV1 21M', (21, 23), ('mobilenetv1_025', 160), ('mobilenetv1_100_bft', 128)),
    ('MobileNetV1 34M', (34, 35), ('mobilenetv1_025', 192), ('mobilenetv1_100_bft', 160)),
    ('MobileNetV1 49M', (49, 51), ('mobilenetv1_050', 128), ('mobilenetv1_100_bft', 192)),
    ('MobileNetV1 49M (2.0x)', (49, 52), ('mobilenetv1_050', 128), ('mobilenetv1_200_bft', 128)),
    ('MobileNetV1 110M', (110, 112), ('mobilenetv1_050', 192), ('mobilenetv1_200_bft', 192)),
    ('MobileNetV1 150M', (150, 150), ('mobilenetv1_050', 224), ('mobilenetv1_200_bft', 224)),
    ('ShuffleNetV2 14M', (14, 14), ('shufflenetv2_050', 128), ('shufflenetv2_125_bft', 128)),
    ('ShuffleNetV2 21M', (21, 21), ('shufflenetv2_050', 160), ('shufflenetv2_125_bft', 160)),
    ('ShuffleNetV2 41M', (41, 41), ('shufflenetv2_050', 224), ('shufflenetv2_125_bft', 224)),
    ('MobileNetV3 13-15M', (13, 15), ('mobilenetv3_small_035', 224), ('mobilenetv3_small_050_bft', 224)),
]
BACKENDS = ('eager', 'compile', 'onnxruntime')


def train_step(model, x, y, optimizer):
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
    return step


def median_latency(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def deployed_latencies(model, res: int, backends, repeats: int) -> Dict[str, float]:
    x = torch.randn(1, 3, res, res)
    out = {}
    with torch.no_grad():
        if 'compile' in backends:
            compiled = torch.compile(model)
            out['compile'] = median_latency(lambda: compiled(x), repeats)
        if 'onnxruntime' in backends:
            import onnxruntime as ort
            from bftnets.export import export_onnx, fold_for_inference
            has_bft = any(isinstance(m, bftnets.ButterflyTransform) for m in model.modules())
            # BFTs folded by the cost model (auto) and, for BFT models, every BFT as a dense 1x1 conv
            for dense, label in (('auto', 'onnxruntime'), ('always', 'onnxruntime-dense'))[:2 if has_bft else 1]:
                with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
                    warnings.simplefilter('ignore')
                    folded = fold_for_inference(model, (3, res, res), dense)
                    path = export_onnx(folded, f'{tmp}/m.onnx', (3, res, res), ())
                    options = ort.SessionOptions()
                    options.intra_op_num_threads = torch.get_num_threads()
                    options.inter_op_num_threads = 1
                    session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
                    feed = {session.get_inputs()[0].name: x.numpy()}
                    out[label] = median_latency(lambda: session.run(None, feed), repeats)
    return out


def bench_pair(base: Tuple[str, int], bft: Tuple[str, int], batch: int, repeats: int, backends,
               cache: Dict[Tuple[str, int], dict]) -> Tuple[dict, dict]:
    models, steps, ones = {}, {}, {}
    for name, res in (base, bft):
        torch.manual_seed(0)
        model = timm.create_model(name).train()
        models[(name, res)] = model
        x = torch.randn(batch, 3, res, res)
        y = torch.randint(0, model.num_classes, (batch,))
        steps[(name, res)] = train_step(model, x, y, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))
        ones[(name, res)] = torch.randn(1, 3, res, res)
    # training throughput of the two, interleaved (re-measured per pair so that the ratio is same-run)
    train = time_interleaved({key: steps[key] for key in models}, repeats, warmup=1)
    results = []
    for key, model in models.items():
        name, res = key
        if key in cache:
            r = dict(cache[key])
        else:
            flops = count_flops(model.eval(), (3, res, res))
            model.train()
            r = dict(name=name, res=res, mflops=flops.macs / 1e6, params=flops.params / 1e6,
                     peak_mib=peak_memory(steps[key]) / 2 ** 20)
            model.eval()
            r.update(deployed_latencies(model, res, backends, repeats * 4))
            cache[key] = dict(r)
        model.eval()
        with torch.no_grad():
            r['eager'] = median_latency(lambda: model(ones[key]), repeats * 4)
        r['train_ips'] = batch / train[key]
        deployed = {b: r[b] for b in ('compile', 'onnxruntime', 'onnxruntime-dense') if b in r}
        r['best'], r['best_backend'] = (min(deployed.values()), min(deployed, key=deployed.get)) if deployed \
            else (r['eager'], 'eager')
        results.append(r)
    return results[0], results[1]


def plot(rows: List[Tuple[str, dict, dict]], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 5))
    for kind, marker in (('baseline', 'o'), ('BFT', 's')):
        points = [(r['mflops'], r['eager'] * 1e3, r['best'] * 1e3) for _, b, f in rows for r in [b if kind == 'baseline' else f]]
        ax.scatter([p[0] for p in points], [p[1] for p in points], marker=marker, label=f'{kind} eager')
        ax.scatter([p[0] for p in points], [p[2] for p in points], marker=marker, facecolors='none',
                   edgecolors='k', label=f'{kind} deployed (best)')
    for label, b, f in rows:
        ax.annotate(label.split()[0].replace('MobileNet', 'MN').replace('ShuffleNet', 'SN'),
                    (f['mflops'], f['eager'] * 1e3), fontsize=6)
    ax.set_xlabel('MFLOPs (multiply-adds, paper convention)')
    ax.set_ylabel('batch-1 latency, ms (CPU float32)')
    ax.set_title('BFT models vs FLOP-matched baselines')
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path + '.tmp.png'
    fig.savefig(tmp, dpi=120)
    import os
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='smoke run: first 2 pairs at 32x32, batch 2')
    parser.add_argument('--backends', nargs='+', default=None, choices=BACKENDS,
                        help='default: all (--quick: eager onnxruntime)')
    parser.add_argument('--pairs', nargs='*', default=None, help='pair labels to run (default: all)')
    parser.add_argument('--repeats', type=int, default=None)
    parser.add_argument('--batch', type=int, default=None)
    parser.add_argument('--threads', type=int, default=1, help='torch / ORT threads (0 = torch default)')
    parser.add_argument('--out', default=None, help='results directory (default benchmarks/results)')
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.backends is None:
        args.backends = ['eager', 'onnxruntime'] if args.quick else list(BACKENDS)
    pairs = PAIRS[:2] if args.quick else PAIRS
    if args.pairs:
        pairs = [p for p in PAIRS if p[0] in args.pairs]
        if not pairs:
            parser.error(f'no pair matches {args.pairs}; pairs: {[p[0] for p in PAIRS]}')
    repeats = args.repeats or (2 if args.quick else 5)
    batch = args.batch or (2 if args.quick else 32)
    cache: Dict[Tuple[str, int], dict] = {}
    rows, done = [], []
    for label, paper, (base_name, base_res), (bft_name, bft_res) in pairs:
        if args.quick:
            base_res = bft_res = 32
        b, f = bench_pair((base_name, base_res), (bft_name, bft_res), batch, repeats, args.backends, cache)
        done.append((label, b, f))
        rows.append([
            label, f"{b['name']}@{b['res']}", f"{f['name']}@{f['res']}",
            f"{b['mflops']:.1f} / {f['mflops']:.1f}", f"{b['params']:.2f} / {f['params']:.2f}",
            f"{b['train_ips']:.1f} / {f['train_ips']:.1f}", f"**{f['train_ips'] / b['train_ips']:.2f}x**",
            f"{b['eager'] * 1e3:.2f} / {f['eager'] * 1e3:.2f}", f"**{f['eager'] / b['eager']:.2f}x**",
            f"{b['best'] * 1e3:.2f} ({b['best_backend']}) / {f['best'] * 1e3:.2f} ({f['best_backend']})",
            f"**{f['best'] / b['best']:.2f}x**",
            f"{b['peak_mib']:.0f} / {f['peak_mib']:.0f}", f"**{f['peak_mib'] / b['peak_mib']:.2f}x**",
        ])
        print(' | '.join(map(str, rows[-1])), flush=True)
    header = ['pair', 'baseline', 'BFT', 'MFLOPs (base / BFT)', 'params M', 'train img/s', 'train speed ratio',
              'eager b1 ms', 'eager latency ratio', 'deployed b1 ms (best backend)', 'deployed latency ratio',
              'train peak MiB', 'memory ratio']
    table = markdown_table(header, rows)
    name = 'models_quick' if args.quick else 'models'
    out_dir = args.out or RESULTS
    plot_path = f'{out_dir}/{"latency_vs_mflops_quick" if args.quick else "latency_vs_mflops"}.png'
    import os
    os.makedirs(out_dir, exist_ok=True)
    plot(done, plot_path)
    text = (f'# BFT models vs FLOP-matched baselines ({"quick smoke run" if args.quick else "full run"})\n\n'
            f'`python -m benchmarks.models {" ".join(argv if argv is not None else sys.argv[1:])}` on {machine()}.\n'
            f'float32, NCHW. Training: batch {batch} (forward, cross-entropy, backward, SGD step), images/s from the '
            f'median of {repeats} steps, the pair interleaved. Inference: batch 1, median of {repeats * 4}; deployed = '
            f'best of {[b for b in args.backends if b != "eager"]} (ONNX Runtime on the bftnets.export fold). Memory: '
            f'peak bytes allocated during a training step. Ratios BFT / baseline: train speed >= 1 and latency '
            f'<= 1 are the targets.\n\n{table}\n\n![latency vs MFLOPs]({os.path.basename(plot_path)})\n')
    print('\n' + table)
    print(f'\nwrote {write_result(name, text, out_dir)} and {plot_path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
