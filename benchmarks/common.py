"""Shared benchmark helpers: interleaved median timing, training-step peak memory, markdown tables."""
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Sequence

import torch

RESULTS = os.path.join(os.path.dirname(__file__), 'results')


def time_interleaved(fns: Dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> Dict[str, float]:
    """Median seconds per call of every fn, calls interleaved (a, b, a, b, ...) so that load drifting on a
    shared machine hits every contender alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak bytes of tensors allocated and alive at once while ``fn`` runs (pre-existing tensors such as
    the weights and the input are not counted), from the profiler's memory timeline: exact allocator sizes,
    independent of timing and load."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    current = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if action == Action.CREATE:
            current += size
        elif action == Action.DESTROY:
            current -= size
        peak = max(peak, current)
    return peak


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return (f'{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} thread(s), '
            f'{time.strftime("%Y-%m-%d %H:%M")}')


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)


def write_result(name: str, text: str, directory: str = RESULTS) -> str:
    """Write ``<directory>/<name>.md`` atomically (a temp file renamed into place)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f'{name}.md')
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)
    return path
