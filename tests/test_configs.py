"""Every config option composes; the paper experiments carry the Appendix A recipes; bad config is one line."""
import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import CONFIGS, TINY, model_overrides, run_script

GROUP_OPTIONS = {group: sorted(p.stem for p in (Path(CONFIGS) / group).glob('*.yaml'))
                 for group in ('model', 'data', 'trainer', 'optim', 'sched', 'logger', 'callbacks')}
PAPER = sorted(p.stem for p in (Path(CONFIGS) / 'experiment' / 'paper').glob('*.yaml'))

MODEL_NAMES = {'mobilenetv1': 'mobilenetv1_025', 'mobilenetv1_bft': 'mobilenetv1_100_bft',
               'shufflenetv2': 'shufflenetv2_050', 'shufflenetv2_bft': 'shufflenetv2_125_bft',
               'mobilenetv3': 'mobilenetv3_small_035', 'mobilenetv3_bft': 'mobilenetv3_small_050_bft'}

# SPEC.md §3 (rows) and §4 (Appendix A recipes)
PAPER_ROWS = {
    'mobilenetv1_025': {128: (14, 41.50), 160: (21, 45.50), 192: (34, 47.70), 224: (41, 50.60)},
    'mobilenetv1_050': {128: (49, 56.30), 192: (110, 61.70), 224: (150, 63.30)},
    'mobilenetv1_100_bft': {96: (14, 46.58), 128: (23, 52.26), 160: (35, 54.30), 192: (51, 57.56)},
    'mobilenetv1_200_bft': {128: (52, 58.35), 192: (112, 63.03), 224: (150, 64.32)},
    'shufflenetv2_050': {128: (14, 50.86), 160: (21, 55.21), 224: (41, 59.70)},
    'shufflenetv2_125_bft': {128: (14, 55.26), 160: (21, 57.83), 224: (41, 61.33)},
    'mobilenetv3_small_035': {224: (13, 49.8)},
    'mobilenetv3_small_050_bft': {224: (15, 55.21)},
}
RECIPES = {
    'mobilenetv1': dict(max_epochs=170, sched={'name': 'multistep', 'milestones': [140, 160], 'gamma': 0.1}),
    'shufflenetv2': dict(max_epochs=300, sched={'name': 'linear'}),
    'mobilenetv3': dict(max_epochs=200, sched={'name': 'cosine', 'warmup_epochs': 5, 'warmup_lr': 0.1, 'min_lr': 0.0}),
}


@pytest.mark.parametrize('group', sorted(GROUP_OPTIONS))
def test_every_group_option_composes(make_cfg, group):
    assert GROUP_OPTIONS[group], f'configs/{group}/ is empty'
    for option in GROUP_OPTIONS[group]:
        overrides = [f'{group}={option}'] + (['data.root=/x'] if option in ('image_folder', 'imagenet') else [])
        cfg = make_cfg(overrides)
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
        assert cfg[group] is not None


@pytest.mark.parametrize('option,name', sorted(MODEL_NAMES.items()))
def test_model_configs_name_the_paper_variants(make_cfg, option, name):
    cfg = make_cfg([f'model={option}'])
    assert cfg.model._target_ == 'bftnets.training.create_model'
    assert cfg.model.name == name
    assert ('bft_base' in cfg.model) == option.endswith('_bft')
    assert make_cfg([f'model={option}', 'model.name=mobilenetv3_small_100']).model.name == 'mobilenetv3_small_100'


def test_trainer_options(make_cfg):
    ddp = make_cfg(['trainer=ddp', 'trainer.devices=8', 'trainer.num_nodes=4']).trainer
    assert (ddp.strategy, ddp.devices, ddp.num_nodes, ddp.accelerator) == ('ddp', 8, 4, 'gpu')
    cpu = make_cfg(['trainer=ddp_cpu']).trainer
    assert (cpu.strategy, cpu.devices, cpu.accelerator) == ('ddp', 2, 'cpu')
    assert make_cfg(['trainer=gpu', 'trainer.precision=bf16-mixed']).trainer.precision == 'bf16-mixed'


def test_paper_experiments_cover_every_row():
    expected = {f'{model}_r{res}' for model, rows in PAPER_ROWS.items() for res in rows}
    assert set(PAPER) == expected


@pytest.mark.parametrize('name', PAPER)
def test_paper_experiment_recipe(make_cfg, name):
    cfg = make_cfg([f'experiment=paper/{name}', 'data.root=/imagenet'])
    model, res = name.rsplit('_r', 1)
    res = int(res)
    family = model.split('_')[0]
    recipe = RECIPES[family]
    assert cfg.model.name == model
    assert cfg.data.resolution == res and cfg.paper.resolution == res
    assert (cfg.paper.mflops, cfg.paper.top1) == PAPER_ROWS[model][res]
    assert cfg.paper.bft == model.endswith('_bft') == ('bft_base' in cfg.model)
    assert cfg.data._target_ == 'bftnets.data.ImageFolderDataModule' and cfg.data.num_classes == 1000
    assert cfg.trainer.max_epochs == recipe['max_epochs']
    assert OmegaConf.to_container(cfg.sched) == recipe['sched']
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.bft_weight_decay) == ('sgd', 0.5, 1e-5, 1e-5)
    assert cfg.label_smoothing == 0.0 and cfg.ema_decay is None


def test_experiment_can_move_to_fashion_mnist(make_cfg):
    """The study's pattern: a paper row's model, resolution and recipe shape on the embedded dataset."""
    cfg = make_cfg(['experiment=paper/mobilenetv1_100_bft_r96', 'data=fashion_mnist', 'trainer=cpu',
                    'trainer.max_epochs=3', 'seed=7'])
    assert cfg.data._target_ == 'bftnets.data.FashionMNISTDataModule'
    assert (cfg.data.resolution, cfg.model.name, cfg.trainer.max_epochs, cfg.seed) == (96, 'mobilenetv1_100_bft', 3, 7)
    assert cfg.trainer.accelerator == 'cpu' and cfg.sched.name == 'multistep'


def test_cfg_job_and_help_work():
    job = run_script('train.py', ['--cfg', 'job', 'model=mobilenetv1_bft'], timeout=120)
    assert job.returncode == 0, job.stderr
    assert 'name: mobilenetv1_100_bft' in job.stdout
    help_ = run_script('train.py', ['--help'], timeout=120)
    assert help_.returncode == 0 and 'mobilenetv3_bft' in help_.stdout and 'ddp_cpu' in help_.stdout


@pytest.mark.parametrize('overrides,message', [
    (['model=mobilenetv3', 'model.name=resnet_nope'], "error: unknown model 'resnet_nope' (model.name)"),
    (['data.batch_size=0'], 'error: data.batch_size must be a positive int, got 0'),
    (['optim.lr=-1'], 'error: optim.lr must be a number > 0, got -1'),
    (['optim.lr=abc'], "error: optim.lr must be a number > 0, got 'abc'"),
    (['sched.warmup_epochs=-2'], 'error: sched.warmup_epochs must be a number >= 0, got -2'),
    (['data=image_folder', 'data.root=/nonexistent'], 'error: data.root=/nonexistent does not exist'),
])
def test_bad_values_are_one_line(overrides, message, tmp_path):
    result = run_script('train.py', TINY + model_overrides() + overrides + [f'hydra.run.dir={tmp_path}'], timeout=300)
    assert result.returncode == 1
    lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
    assert lines[-1].startswith(message), result.stderr
    assert 'Traceback' not in result.stderr


def test_multirun_sweep_writes_one_run_per_job(tmp_path):
    result = run_script('train.py', ['-m'] + TINY + model_overrides() + [
        'trainer.limit_train_batches=1', 'seed=0,1', f'hydra.sweep.dir={tmp_path}'], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(tmp_path.glob('*/metrics.json'))
    assert [p.parent.name for p in runs] == ['0_mobilenetv3_small_050_bft_r32', '1_mobilenetv3_small_050_bft_r32']
    reports = [json.loads(p.read_text()) for p in runs]
    assert [r['seed'] for r in reports] == [0, 1] and all(r['status'] == 'finished' for r in reports)
    assert all((p.parent / 'checkpoints' / 'last.ckpt').is_file() for p in runs)


def test_unknown_group_option_is_reported_without_traceback(tmp_path):
    result = run_script('train.py', ['model=nope', f'hydra.run.dir={tmp_path}'], timeout=120)
    assert result.returncode == 1
    assert "Could not find 'model/nope'" in result.stderr and 'Traceback' not in result.stderr
