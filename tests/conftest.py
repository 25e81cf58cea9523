import os
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = str(ROOT / 'configs')
sys.path.insert(0, str(ROOT))  # train.py, eval.py, tests.helpers

# A tiny but real run: Fashion-MNIST subsets, a few steps per epoch, small resolution
TINY = ['data.train_subset=96', 'data.val_subset=64', 'data.batch_size=32', 'data.resolution=32',
        'trainer.max_epochs=1', 'sched.warmup_epochs=0', 'callbacks.progress=null', 'logger=none']


def compose_config(name, overrides, tmp_path):
    """Compose configs/<name>.yaml as Hydra would, with this test's directory as the run directory."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIGS, version_base='1.3'):
        cfg = compose(config_name=name, overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.outputs_root = str(tmp_path)
        cfg.paths.root_dir = str(ROOT)
    return cfg


@pytest.fixture
def make_cfg(tmp_path):
    return lambda overrides=(), name='train': compose_config(name, overrides, tmp_path)


def run_script(script, args, cwd=ROOT, timeout=600, **kwargs):
    """Run train.py / eval.py in a subprocess the way a user does."""
    import subprocess
    env = dict(os.environ, PYTHONPATH=str(ROOT), HYDRA_FULL_ERROR='0')
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def model_overrides(option='mobilenetv3_bft'):
    """Overrides that train the given model config (whose timm name must be registered)."""
    import timm

    import bftnets  # noqa: F401
    cfg = compose_config('train', [f'model={option}'], Path('/tmp'))
    assert timm.is_model(cfg.model.name), f'configs/model/{option}.yaml names unregistered {cfg.model.name}'
    return [f'model={option}']
