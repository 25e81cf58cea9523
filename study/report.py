"""The study's report: aggregate every run's metrics.json into results/fashion_mnist.md and
results/accuracy_vs_mflops.png.   python -m study.report [runs_dir] [results_dir]

Accuracy is each run's last-epoch top-1 on the test set (``val_top1``; the recipe validates once, after the
last epoch, so nothing is selected on the test set); mean +- sample std over seeds. A BFT row's difference
is its mean minus its baseline's mean, +- the standard error of that difference (sqrt(s1^2/n1 + s2^2/n2)).
"""
import datetime
import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional



import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

FAMILIES = {'mobilenetv1': 'MobileNetV1', 'shufflenetv2': 'ShuffleNetV2', 'mobilenetv3': 'MobileNetV3'}
TABLE, PLOT = 'fashion_mnist.md', 'accuracy_vs_mflops.png'


def collect(runs_dir: Path) -> Dict[str, Dict]:
    """row -> {'study', 'mflops', 'params', 'top1': [...], 'seeds': [...], 'config'} over finished runs."""
    rows: Dict[str, Dict] = {}
    for path in sorted(Path(runs_dir).glob('*/seed*/metrics.json')):
        m = json.loads(path.read_text())
        if m.get('status') != 'finished' or m.get('val_top1') is None or not m.get('study_row'):
            continue
        info = {key: m.get(f'study_{key}') for key in ('row', 'family', 'bft', 'baseline', 'ablation')}
        row = rows.setdefault(info['row'], {'study': info, 'model': m['model'], 'mflops': m['mflops'],
                                                  'params': m['params'], 'top1': [], 'seeds': [],
                                                  'train_seconds': 0.0, 'config': path.parent / '.hydra' / 'config.yaml'})
        row['top1'].append(100 * m['val_top1'])
        row['seeds'].append(m['seed'])
        row['train_seconds'] += m.get('train_seconds') or 0.0
    return rows


def mean_std(values: List[float]):
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float('nan'))


def _acc(row: Optional[Dict]) -> str:
    if not row:
        return 'not run'
    mean, std = mean_std(row['top1'])
    return f"{mean:.2f} ± {std:.2f} (n={len(row['top1'])})" if len(row['top1']) > 1 else f"{mean:.2f} (n=1)"


def _cost(row: Optional[Dict]) -> str:
    return f"{row['mflops']:.2f} | {row['params'] / 1e6:.3f} M" if row else '- | -'


def _diff(row: Optional[Dict], ref: Optional[Dict]) -> str:
    if not row or not ref:
        return 'n/a'
    (m1, s1), (m0, s0) = mean_std(row['top1']), mean_std(ref['top1'])
    se = math.sqrt(sum(s * s / len(r['top1']) for s, r in ((s1, row), (s0, ref)) if not math.isnan(s)))
    return f'{m1 - m0:+.2f} ± {se:.2f}' if se else f'{m1 - m0:+.2f}'


def _setup(rows: Dict[str, Dict]) -> str:
    cfg = next((OmegaConf.load(r['config']) for r in rows.values() if r['config'].is_file()), None)
    if cfg is None:
        return '(run configuration not found)'
    d, t, o, s = cfg.data, cfg.trainer, cfg.optim, cfg.sched
    subset = f'the first {d.train_subset}' if d.train_subset else 'all 60000'
    val = f'the first {d.val_subset} of the 10000' if d.val_subset else 'all 10000'
    return (f'Fashion-MNIST, 1x{d.resolution}x{d.resolution} (28x28 resized), {subset} training images, '
            f'{t.max_epochs} epoch(s), batch {d.batch_size}, random horizontal flips. One recipe for every model: '
            f'SGD momentum {o.momentum}{" nesterov" if o.nesterov else ""}, lr {o.lr}, {s.name} schedule '
            f'({s.warmup_epochs} warm-up epochs from {s.warmup_lr}), weight decay {o.weight_decay} (BFT weights: '
            f'{o.bft_weight_decay} unless ablated), label smoothing {cfg.label_smoothing}. Top-1: last epoch, on '
            f'{val} test images.')


def write_table(rows: Dict[str, Dict], study: Dict, path: Path, wall_seconds: Optional[float] = None) -> None:
    res = next((OmegaConf.load(r['config']).data.resolution for r in rows.values() if r['config'].is_file()), '?')
    lines = [
        '# Fashion-MNIST: BFT models vs their FLOP-matched baselines',
        '',
        f"Written by `python -m study{' study.quick=true' if study.get('quick') else ''}` "
        f"on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Do not edit by hand.",
        '',
        _setup(rows),
        f"Seeds: {study['seeds']} for the pairs, {study['ablation_seeds']} for the ablations. "
        f"MFLOPs: millions of multiply-adds at {res}x{res}, paper convention (conv + linear, BFT at its "
        f"factored cost; bftnets.flops). Params include the 10-class classifier.",
    ]
    if wall_seconds is not None:
        train_min = sum(r['train_seconds'] for r in rows.values()) / 60
        lines.append(f"Wall time of this study: {wall_seconds / 60:.1f} min with {study.get('workers', 1)} runs in "
                     f"parallel ({train_min:.0f} min of training steps summed over runs) on a 2-core CPU shared "
                     f"with other jobs: a quiet machine is faster.")
    lines += ['', '## Paper pairs (SPEC.md §3), one resolution for all', '',
              '| family | model | MFLOPs | params | top-1 % (mean ± std) | BFT − baseline |',
              '|---|---|---:|---:|---|---|']
    for name in study['pairs']:
        r = rows.get(name)
        info = r['study'] if r else {}
        base = info.get('baseline')
        versus = f'{_diff(r, rows.get(base))} vs {base}' if base else ''
        family = FAMILIES.get(info.get('family', name.split('_')[0]), '?')
        lines.append(f"| {family} | {name} | {_cost(r)} | {_acc(r)} | {versus} |")
    if study['ablations']:
        ref = 'mobilenetv1_100_bft'
        lines += ['', f'## Ablations on {ref} (reference: base k = 4, first-to-last residual, BFT weight decay '
                      f'as the recipe, no activation between butterfly layers)', '',
                  '| ablation | MFLOPs | params | top-1 % (mean ± std) | vs reference |', '|---|---:|---:|---|---|']
        lines.append(f'| reference ({ref}) | {_cost(rows.get(ref))} | {_acc(rows.get(ref))} | |')
        for name in study['ablations']:
            r = rows.get(name)
            label = r['study']['ablation'] if r else name
            lines.append(f'| {label} | {_cost(r)} | {_acc(r)} | {_diff(r, rows.get(ref))} |')
    _atomic_write_text(path, '\n'.join(lines) + '\n')


def plot(rows: Dict[str, Dict], study: Dict):
    """Top-1 vs MFLOPs: per family, a dense-baseline series and a BFT series, each point mean ± std."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = dict(zip(FAMILIES, ('tab:blue', 'tab:orange', 'tab:green')))
    for family, title in FAMILIES.items():
        for bft, marker, style in ((False, 'o', '--'), (True, '^', '-')):
            points = sorted((r['mflops'], *mean_std(r['top1'])) for name, r in rows.items()
                            if name in study['pairs'] and r['study']['family'] == family and r['study']['bft'] == bft)
            if not points:
                continue
            x, y, err = zip(*points)
            ax.errorbar(x, y, yerr=[0 if math.isnan(e) else e for e in err], marker=marker, linestyle=style,
                        color=colours[family], capsize=3, label=f"{title} {'+ BFT' if bft else 'dense'}")
    ax.set_xscale('log')
    ax.set_xlabel('MFLOPs (multiply-adds, paper convention)')
    ax.set_ylabel('Fashion-MNIST top-1 (%)')
    ax.set_title('BFT vs dense pointwise convs at one resolution')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(runs_dir: Path, results_dir: Path, study: Dict, wall_seconds: Optional[float] = None):
    rows = collect(runs_dir)
    if not rows:
        raise SystemExit(f'error: no finished run with a metrics.json under {runs_dir}')
    results_dir = Path(results_dir)
    table = results_dir / TABLE
    write_table(rows, study, table, wall_seconds)
    fig = plot(rows, study)
    png = results_dir / PLOT
    tmp = png.with_name(png.name + '.tmp.png')
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, png)
    return table, png


if __name__ == '__main__':
    from study.__main__ import load_config
    args = sys.argv[1:]
    study = load_config([a for a in args if '=' in a])
    paths = [a for a in args if '=' not in a]
    runs, results = (paths + [study['runs_dir'], study['results_dir']][len(paths):])[:2]
    print(*write_report(Path(runs), Path(results), study), sep='\n')
