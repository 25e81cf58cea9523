"""The Fashion-MNIST study (python -m study): its configs, its report, the quick study end to end; and the
paper configs' learning-rate curves as Appendix A draws them."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from conftest import CONFIGS, ROOT
from bftnets.training.optim import create_scheduler
from study.__main__ import load_config, plan_runs
from study.report import collect, plot, write_report

STUDY_DIR = Path(CONFIGS) / 'experiment' / 'study'
ROWS = sorted(p.stem for p in STUDY_DIR.glob('*.yaml') if not p.stem.startswith('_'))
PAPER = sorted(p.stem for p in (Path(CONFIGS) / 'experiment' / 'paper').glob('*.yaml'))
ABLATED = {'ablation_no_residual': ('model.bft_residual', False), 'ablation_base2': ('model.bft_base', 2),
           'ablation_base8': ('model.bft_base', 8), 'ablation_relu': ('model.bft_inner_act', True),
           'ablation_bft_wd0': ('optim.bft_weight_decay', 0.0), 'ablation_bft_wd1e-4': ('optim.bft_weight_decay', 1e-4)}


def test_study_lists_every_row_once():
    study = load_config([])
    assert sorted(study['pairs'] + study['ablations']) == ROWS
    assert set(study['ablations']) == set(ABLATED)
    runs = plan_runs(study)
    assert len(runs) == 8 * 3 + 6 * 1 and len(set(runs)) == len(runs)
    assert {seed for _, seed in runs[:14]} == {0}  # seed 0 of every row first: a study stopped early has all rows
    quick = load_config(['study.quick=true'])
    assert len(plan_runs(quick)) == 14 and quick['runs_dir'] != study['runs_dir']
    assert quick['results_dir'] != 'results'  # the smoke test never overwrites the committed results
    with pytest.raises(SystemExit, match='no configs/experiment/study/<row>.yaml'):
        load_config(['study.ablations=[ablation_nope]'])


def test_one_recipe_for_every_row(make_cfg):
    """Every row trains at the same resolution with the same data, optimiser and schedule; ablations differ
    from the reference BFT model in exactly their one field."""
    shared = ('data', 'trainer', 'sched', 'label_smoothing', 'ema_decay')
    ref = make_cfg(['experiment=study/mobilenetv1_100_bft'])
    for row in ROWS:
        cfg = make_cfg([f'experiment=study/{row}'])
        OmegaConf.to_container(cfg, resolve=True)
        assert cfg.study.row == row and cfg.data._target_ == 'bftnets.data.FashionMNISTDataModule'
        assert cfg.data.resolution == 32 and cfg.callbacks.report.extra.study_row == row
        for key in shared:
            assert OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key] == (
                OmegaConf.to_container(ref[key], resolve=True) if OmegaConf.is_config(ref[key]) else ref[key]), (row, key)
        if row in ABLATED:
            key, value = ABLATED[row]
            assert OmegaConf.select(cfg, key) == value and OmegaConf.select(ref, key) != value
            differing = [k for k in ('model', 'optim') if cfg[k] != ref[k]]
            assert differing == [key.split('.')[0]], row
        else:
            assert cfg.model.name == row and cfg.optim == ref.optim
            base = cfg.study.baseline
            assert (base is not None) == cfg.study.bft == row.endswith('_bft')


def _fake_run(runs_dir, row, seed, top1, mflops=1.0, params=1000, **study):
    d = runs_dir / row / f'seed{seed}'
    d.mkdir(parents=True)
    info = {'row': row, 'family': 'mobilenetv1', 'bft': row.endswith('_bft'), 'baseline': None, 'ablation': None, **study}
    (d / 'metrics.json').write_text(json.dumps({
        'status': 'finished', 'model': row, 'mflops': mflops, 'params': params, 'seed': seed, 'val_top1': top1,
        'train_seconds': 1.0, **{f'study_{k}': v for k, v in info.items()}}))


def test_report_numbers(tmp_path):
    runs = tmp_path / 'runs'
    for seed, (b, t) in enumerate([(0.80, 0.84), (0.82, 0.85), (0.84, 0.86)]):
        _fake_run(runs, 'mobilenetv1_025', seed, b, mflops=0.8)
        _fake_run(runs, 'mobilenetv1_100_bft', seed, t, mflops=1.26, baseline='mobilenetv1_025')
    _fake_run(runs, 'ablation_base2', 0, 0.83, mflops=1.26, baseline='mobilenetv1_100_bft', ablation='base k = 2')
    (runs / 'broken' / 'seed0').mkdir(parents=True)
    (runs / 'broken' / 'seed0' / 'metrics.json').write_text(json.dumps({'status': 'stopped: NonFiniteLossError'}))
    study = {'pairs': ['mobilenetv1_025', 'mobilenetv1_100_bft', 'mobilenetv1_050'], 'ablations': ['ablation_base2'],
             'seeds': [0, 1, 2], 'ablation_seeds': [0]}
    table, png = write_report(runs, tmp_path / 'out', study)
    text = table.read_text()
    assert '| MobileNetV1 | mobilenetv1_025 | 0.80 | 0.001 M | 82.00 ± 2.00 (n=3) |  |' in text
    # difference of means 3.00; standard error sqrt(4/3 + 1/3) = 1.29
    assert '| 85.00 ± 1.00 (n=3) | +3.00 ± 1.29 vs mobilenetv1_025 |' in text
    assert '| mobilenetv1_050 | - | - | not run |' in text
    assert '| base k = 2 | 1.26 | 0.001 M | 83.00 (n=1) | -2.00 ± 0.58 |' in text
    assert 'broken' not in text
    with Image.open(png) as image:
        assert image.format == 'PNG' and image.size[0] > 400


def _series(ax):
    return {c.get_label(): c for c in ax.containers}


@pytest.mark.slow
def test_quick_study_end_to_end(tmp_path):
    runs, out = tmp_path / 'runs', tmp_path / 'results'
    result = subprocess.run([sys.executable, '-m', 'study', 'study.quick=true', f'study.runs_dir={runs}',
                             f'study.results_dir={out}'], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = load_config(['study.quick=true'])
    text = (out / 'fashion_mnist.md').read_text()
    assert 'not run' not in text and '1x32x32' in text and 'the first 512 training images' in text
    for row in study['pairs']:
        assert f'| {row} |' in text
    rows = collect(runs)
    assert set(rows) == set(study['pairs'] + study['ablations'])
    for row in rows.values():
        assert len(row['top1']) == 1 and 0 <= row['top1'][0] <= 100 and row['mflops'] > 0.1
    assert rows['mobilenetv1_100_bft']['mflops'] == pytest.approx(1.258, abs=0.01)  # bftnets.flops at 32x32, 1 channel
    for ablation in ('residual: none', 'base k = 2', 'base k = 8', 'BFT weight decay 0', 'BFT weight decay 1e-4',
                     'ReLU between butterfly layers'):
        assert f'| {ablation} |' in text
    with Image.open(out / 'accuracy_vs_mflops.png') as image:
        image.verify()
    with Image.open(out / 'accuracy_vs_mflops.png') as image:
        pixels = np.asarray(image.convert('L'), dtype=float)
    assert pixels.shape[0] > 300 and pixels.std() > 10  # a drawn plot, not a blank canvas
    series = _series(plot(rows, study).axes[0])
    for family in ('MobileNetV1', 'ShuffleNetV2', 'MobileNetV3'):
        dense, bft = series[f'{family} dense'], series[f'{family} + BFT']
        assert len(dense.lines[0].get_xdata()) == len(bft.lines[0].get_xdata()) == (2 if family == 'MobileNetV1' else 1)
    assert len(series) == 6


# --- the paper's recipes (Appendix A) as learning-rate curves, from the composed configs -------------------

CURVES = {  # family -> [(epoch, lr)], SPEC.md §4
    'mobilenetv1': [(0, 0.5), (139.9, 0.5), (140, 0.05), (159.9, 0.05), (160, 0.005), (169.9, 0.005)],
    'shufflenetv2': [(0, 0.5), (75, 0.375), (150, 0.25), (300, 0.0)],
    'mobilenetv3': [(0, 0.1), (2.5, 0.3), (5, 0.5), (5 + 97.5, 0.25), (200, 0.0)],
}


@pytest.mark.parametrize('name', PAPER)
def test_paper_config_draws_the_appendix_a_lr_curve(make_cfg, name):
    cfg = make_cfg([f'experiment=paper/{name}', 'data.root=/imagenet'])
    family = cfg.paper.family
    steps = 10
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    scheduler = create_scheduler(optimizer, epochs=cfg.trainer.max_epochs, steps_per_epoch=steps,
                                 **OmegaConf.to_container(cfg.sched))
    for epoch, lr in CURVES[family]:
        scheduler.step_update(num_updates=round(epoch * steps))
        assert optimizer.param_groups[0]['lr'] == pytest.approx(lr, abs=1e-9), (name, epoch)
    # the ImageNet pipeline at the row's resolution, global batch 1024, weight decay 1e-5 on every weight
    assert cfg.data._target_ == 'bftnets.data.ImageFolderDataModule' and cfg.data.num_classes == 1000
    assert list(cfg.data.mean) == [0.485, 0.456, 0.406] and cfg.data.resolution == cfg.paper.resolution
    assert cfg.data.batch_size * 4 == 1024 and cfg.trainer.strategy == 'ddp'
    assert cfg.optim.weight_decay == cfg.optim.bft_weight_decay == 1e-5 and cfg.label_smoothing == 0.0
