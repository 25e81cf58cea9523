"""python -m study [study.quick=true] [study.workers=2] [study.seeds=[0,1,2]] ...

Runs ``train.py experiment=study/<row> seed=<s>`` for every row of configs/study.yaml and every seed, a few
runs in parallel (one process each: on a shared CPU two single-threaded runs waste less than one
two-threaded run waiting on its slower thread), then writes the report (study/report.py). Each run lands in
``<runs_dir>/<row>/seed<s>/`` (metrics.json, train.log, Hydra's config); a run whose metrics.json says
finished and whose command is unchanged is reused, so an interrupted study resumes where it stopped.
"""
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from study.report import write_report

ROOT = Path(__file__).resolve().parents[1]


def load_config(overrides):
    with initialize_config_dir(config_dir=str(ROOT / 'configs'), version_base='1.3'):
        cfg = compose(config_name='study', overrides=list(overrides))
    study = OmegaConf.to_container(cfg.study, resolve=True)
    quick = study.pop('quick_settings')
    if study['quick']:  # quick_settings replace the defaults, not what the command line set
        given = {o.split('=', 1)[0].lstrip('+~').removeprefix('study.') for o in overrides}
        study.update({key: value for key, value in quick.items() if key not in given})
    for key in ('workers', 'threads_per_worker'):
        if not isinstance(study[key], int) or study[key] < 1:
            raise SystemExit(f'error: study.{key} must be a positive int, got {study[key]!r}')
    known = {p.stem for p in (ROOT / 'configs' / 'experiment' / 'study').glob('*.yaml')}
    unknown = [r for r in study['pairs'] + study['ablations'] if r not in known]
    if unknown:
        raise SystemExit(f'error: no configs/experiment/study/<row>.yaml for {unknown}; rows are {sorted(known)}')
    return study


def plan_runs(study):
    """(row, seed) in rounds of seeds, so that a study stopped early still has every row; within a round,
    BFT rows (the slow ones on CPU) first so that the parallel workers finish together."""
    bft_first = lambda rs: '_bft' not in rs[0] and not rs[0].startswith('ablation')  # noqa: E731
    runs = []
    for i in range(max(len(study['seeds']), len(study['ablation_seeds']))):
        this_round = [(row, study['seeds'][i]) for row in study['pairs'] if i < len(study['seeds'])]
        this_round += [(row, study['ablation_seeds'][i]) for row in study['ablations']
                       if i < len(study['ablation_seeds'])]
        runs += sorted(this_round, key=bft_first)
    return runs


def run_one(row, seed, study, env):
    run_dir = ROOT / study['runs_dir'] / row / f'seed{seed}'
    cmd = [sys.executable, str(ROOT / 'train.py'), f'experiment=study/{row}', f'seed={seed}',
           *study['overrides'], f'hydra.run.dir={run_dir}']
    metrics, command_file = run_dir / 'metrics.json', run_dir / 'command.txt'
    shown = ' '.join(cmd[1:-1])
    if (metrics.is_file() and command_file.is_file() and command_file.read_text() == shown
            and json.loads(metrics.read_text()).get('status') == 'finished'):
        print(f'reused   {row} seed {seed}', flush=True)
        return row, seed, 0
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics.unlink(missing_ok=True)
    start = time.perf_counter()
    with open(run_dir / 'train.log', 'w') as log:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    command_file.write_text(shown)
    top1 = json.loads(metrics.read_text()).get('val_top1') if metrics.is_file() else None
    print(f"{'finished' if rc == 0 else f'FAILED({rc})'} {row} seed {seed} in {time.perf_counter() - start:.0f} s"
          f"{f', top-1 {100 * top1:.2f}%' if top1 is not None else ''} ({run_dir / 'train.log'})", flush=True)
    return row, seed, rc


def main(argv):
    study = load_config(argv)
    runs = plan_runs(study)
    threads = str(study['threads_per_worker'])
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
               HYDRA_FULL_ERROR='0')
    print(f"study: {len(runs)} runs, {study['workers']} at a time, {threads} thread(s) each -> "
          f"{study['runs_dir']}, report -> {study['results_dir']}", flush=True)
    start = time.time()
    with ThreadPoolExecutor(study['workers']) as pool:
        results = list(pool.map(lambda rs: run_one(*rs, study, env), runs))
    wall = time.time() - start
    failed = [(row, seed) for row, seed, rc in results if rc != 0]
    table, plot = write_report(ROOT / study['runs_dir'], ROOT / study['results_dir'], study, wall_seconds=wall)
    print(f'study finished in {wall / 60:.1f} min; {table}, {plot}', flush=True)
    if failed:
        print(f'error: {len(failed)} run(s) failed: {failed} (see their train.log)', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
