"""Test-only callbacks, added to a run from the command line: `+callbacks.x._target_=tests.helpers.<Name>`."""
import hashlib
import json
from pathlib import Path

import lightning as L


class InjectNaN(L.Callback):
    """Turns the input batch into NaNs at ``at_step`` (a corrupt batch), so the loss becomes NaN."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            batch[0].fill_(float('nan'))


class RecordBatches(L.Callback):
    """Writes ``<directory>/rank<r>.json``: a fingerprint of every training image this rank saw."""

    def __init__(self, directory: str):
        self.directory = Path(directory)
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen += [hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in batch[0]]

    def on_train_end(self, trainer, pl_module):
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f'rank{trainer.global_rank}.json'
        path.write_text(json.dumps({'world_size': trainer.world_size, 'steps': trainer.global_step, 'seen': self.seen}))


class KillAt(L.Callback):
    """SIGKILLs its own process after optimiser step ``step``: a crash with no chance to clean up."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            import os
            import signal
            os.kill(os.getpid(), signal.SIGKILL)
