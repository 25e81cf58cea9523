"""Training and evaluation end to end on Fashion-MNIST subsets; optimiser groups; schedules; NaN stop; seeds."""
import json
import math

import pytest
import torch
from torch import nn

import bftnets
from bftnets.training import ConfigError, NonFiniteLossError, create_scheduler, load_checkpoint, param_groups
from conftest import TINY, model_overrides, run_script

MODELS = ['mobilenetv1', 'mobilenetv1_bft', 'shufflenetv2', 'shufflenetv2_bft', 'mobilenetv3', 'mobilenetv3_bft']


def train_tiny(make_cfg, overrides=()):
    from train import train
    cfg = make_cfg(TINY + list(overrides))
    return cfg, train(cfg)


@pytest.mark.parametrize('option', MODELS)
def test_train_then_eval_each_model(make_cfg, tmp_path, option):
    cfg, report = train_tiny(make_cfg, model_overrides(option) + ['trainer.limit_train_batches=2'])
    assert report['status'] == 'finished' and report['global_step'] == 2 and report['epochs_done'] == 1
    assert report['params'] > 0 and report['mflops'] > 0
    metrics = json.loads((tmp_path / 'metrics.json').read_text())
    assert metrics['model'] == cfg.model.name and metrics['history'][0]['epoch'] == 0
    best = metrics['best_ckpt']
    assert best and (tmp_path / 'checkpoints' / 'last.ckpt').is_file()

    from eval import evaluate
    eval_cfg = make_cfg([f'ckpt_path={best}', 'data.val_subset=64', 'throughput_batch=8'], name='eval')
    result = evaluate(eval_cfg)
    # the same weights on the same 64 test images: eval.py agrees with the validation of the run
    assert result['top1'] == pytest.approx(metrics['val_top1'], abs=1e-6)
    assert result['loss'] == pytest.approx(metrics['val_loss'], rel=1e-4)
    assert result['params'] == metrics['params'] and result['mflops'] == metrics['mflops']
    assert result['resolution'] == 32 and result['images_per_s'] > 0
    assert json.loads((tmp_path / 'eval.json').read_text())['top1'] == result['top1']


def test_seed_makes_cpu_runs_repeatable(make_cfg, tmp_path):
    overrides = model_overrides() + ['trainer.limit_train_batches=3', 'seed=3']
    _, first = train_tiny(make_cfg, overrides)
    (tmp_path / 'checkpoints').rename(tmp_path / 'first')
    _, second = train_tiny(make_cfg, overrides)
    (tmp_path / 'checkpoints').rename(tmp_path / 'second')  # or the next run would resume this one
    assert first['history'][0]['train/loss'] == second['history'][0]['train/loss']
    assert first['val_loss'] == second['val_loss']
    _, other = train_tiny(make_cfg, overrides[:-1] + ['seed=4'])
    assert other['history'][0]['train/loss'] != first['history'][0]['train/loss']


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(make_cfg, tmp_path):
    overrides = model_overrides() + ['trainer.max_epochs=3', 'trainer.limit_train_batches=2',
                                     '+callbacks.nan._target_=tests.helpers.InjectNaN', '+callbacks.nan.at_step=3']
    with pytest.raises(NonFiniteLossError, match=r'loss is nan at epoch 1, step 3: training stopped'):
        train_tiny(make_cfg, overrides)
    last = load_checkpoint(tmp_path / 'checkpoints' / 'last.ckpt')
    assert last['epoch'] == 0 and last['global_step'] == 2  # the good epoch, not the poisoned one
    assert all(torch.isfinite(v).all() for v in last['state_dict'].values() if v.is_floating_point())
    metrics = json.loads((tmp_path / 'metrics.json').read_text())
    assert metrics['status'].startswith('stopped: NonFiniteLossError: loss is nan')


def test_nan_from_the_command_line_is_one_line(tmp_path):
    result = run_script('train.py', TINY + model_overrides() + [
        'trainer.limit_train_batches=2', '+callbacks.nan._target_=tests.helpers.InjectNaN', '+callbacks.nan.at_step=1',
        f'hydra.run.dir={tmp_path}'], timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith('error: loss is nan at epoch 0, step 1')
    assert 'Traceback' not in result.stderr


def test_eval_refuses_files_that_are_not_bftnets_checkpoints(tmp_path):
    plain = tmp_path / 'plain.pt'
    torch.save({'weight': torch.zeros(2)}, plain)
    with pytest.raises(ConfigError, match=r"is not a bftnets checkpoint \(no 'bftnets' entry"):
        load_checkpoint(plain)
    pickled = tmp_path / 'object.pt'
    torch.save({'bftnets': {}, 'state_dict': {}, 'evil': nn.Linear(2, 2)}, pickled)
    with pytest.raises(ConfigError, match='is not a bftnets checkpoint: safe loading refused it'):
        load_checkpoint(pickled)
    text = tmp_path / 'notes.ckpt'
    text.write_text('hello')
    with pytest.raises(ConfigError, match='is not a readable PyTorch checkpoint'):
        load_checkpoint(text)
    result = run_script('eval.py', [f'ckpt_path={plain}', f'hydra.run.dir={tmp_path}'], timeout=120)
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f'error: {plain} is not a bftnets checkpoint')


def test_param_groups_give_bft_weights_their_own_decay():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, bias=True), nn.BatchNorm2d(16), bftnets.ButterflyTransform(16, 16),
                          nn.Conv2d(16, 8, 1, bias=False))
    groups = {g['group']: g for g in param_groups(model, weight_decay=1e-5, bft_weight_decay=0.0)}
    assert groups['bft']['weight_decay'] == 0.0 and groups['bft']['params'] == [model[2].weight]
    assert groups['dense']['weight_decay'] == 1e-5
    assert {id(p) for p in groups['dense']['params']} == {id(model[0].weight), id(model[3].weight)}
    assert {id(p) for p in groups['no_decay']['params']} == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}
    assert groups['no_decay']['weight_decay'] == 0.0
    default = {g['group']: g['weight_decay'] for g in param_groups(model, weight_decay=1e-5)}
    assert default == {'dense': 1e-5, 'bft': 1e-5, 'no_decay': 0.0}  # the paper: 1e-5 everywhere


def _lrs(name, epochs, steps_per_epoch, at_epochs, **kwargs):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    scheduler = create_scheduler(optimizer, name, epochs=epochs, steps_per_epoch=steps_per_epoch, **kwargs)
    out = []
    for epoch in at_epochs:
        scheduler.step_update(num_updates=round(epoch * steps_per_epoch))
        out.append(optimizer.param_groups[0]['lr'])
    return out


def test_appendix_a_schedules():
    # MobileNetV1: 0.5 constant, x0.1 at 140 and 160
    assert _lrs('multistep', 170, 10, [0, 139.9, 140, 159.9, 160, 169.9], milestones=[140, 160]) == pytest.approx(
        [0.5, 0.5, 0.05, 0.05, 0.005, 0.005])
    # ShuffleNetV2: linear from 0.5 to 0
    assert _lrs('linear', 300, 10, [0, 150, 300]) == pytest.approx([0.5, 0.25, 0.0])
    # MobileNetV3: 5 warm-up epochs 0.1 -> 0.5, then cosine 0.5 -> 0
    cosine = _lrs('cosine', 200, 10, [0, 2.5, 5, 102.5, 200], warmup_epochs=5, warmup_lr=0.1)
    assert cosine == pytest.approx([0.1, 0.3, 0.5, 0.25, 0.0], abs=1e-9)
    with pytest.raises(ConfigError, match='fall outside the run'):
        _lrs('multistep', 100, 10, [0], milestones=[140])
