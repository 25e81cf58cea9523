"""Distributed training on CPU (gloo) and kill-and-resume, each through train.py in a subprocess."""
import json
import signal

import pytest

from conftest import TINY, model_overrides, run_script


def test_ddp_cpu_two_ranks_see_disjoint_data(tmp_path):
    record = tmp_path / 'seen'
    result = run_script('train.py', TINY + model_overrides() + [
        'trainer=ddp_cpu', 'data.train_subset=128', 'data.batch_size=16', 'data.hflip=false',
        '+callbacks.record._target_=tests.helpers.RecordBatches', f'+callbacks.record.directory={record}',
        f'hydra.run.dir={tmp_path / "run"}'], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((record / f'rank{r}.json').read_text()) for r in (0, 1)]
    assert [r['world_size'] for r in ranks] == [2, 2]
    # DistributedSampler: 128 images split 64/64, four steps of 16 on each rank
    assert [len(r['seen']) for r in ranks] == [64, 64] and [r['steps'] for r in ranks] == [4, 4]
    assert not set(ranks[0]['seen']) & set(ranks[1]['seen'])
    assert len(set(ranks[0]['seen']) | set(ranks[1]['seen'])) == 128
    metrics = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert metrics['status'] == 'finished' and metrics['global_step'] == 4
    assert metrics['train_images_per_s'] > 0


def test_killed_run_resumes_without_losing_or_repeating_an_epoch(tmp_path):
    run_dir = tmp_path / 'run'
    args = [a for a in TINY if not a.startswith(('data.train_subset', 'trainer.max_epochs'))] + model_overrides() + [
        'data.train_subset=320', 'data.batch_size=32', 'trainer.max_epochs=3', f'hydra.run.dir={run_dir}']
    # SIGKILL in the middle of epoch 1 (10 steps per epoch)
    killed = run_script('train.py', args + ['+callbacks.kill._target_=tests.helpers.KillAt', '+callbacks.kill.step=15'])
    assert killed.returncode == -signal.SIGKILL
    before = json.loads((run_dir / 'metrics.json').read_text())
    assert before['status'] == 'running' and before['epochs_done'] == 1 and before['global_step'] == 10

    result = run_script('train.py', args)  # the same run directory: resumes its own last.ckpt
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'resuming from {run_dir}/checkpoints/last.ckpt' in result.stdout
    metrics = json.loads((run_dir / 'metrics.json').read_text())
    assert metrics['status'] == 'finished' and metrics['global_step'] == 30  # no step lost or repeated
    assert [h['epoch'] for h in metrics['history']] == [0, 1, 2]
    assert [h['step'] for h in metrics['history']] == [10, 20, 30]
    # the report names the checkpoint ModelCheckpoint chose, not the one before it
    best = max(metrics['history'], key=lambda h: h['val/top1'])
    assert metrics['best_val_top1'] == pytest.approx(best['val/top1'], abs=1e-6)
    assert f"epoch{best['epoch']:03d}" in metrics['best_ckpt']


def test_ckpt_path_last_finds_the_newest_run(tmp_path):
    from bftnets.training import ConfigError, resolve_resume
    import pytest
    assert resolve_resume(None, str(tmp_path / 'new'), str(tmp_path), 'm') is None
    with pytest.raises(ConfigError, match='ckpt_path=last: no last.ckpt under'):
        resolve_resume('last', str(tmp_path / 'new'), str(tmp_path), 'm')
