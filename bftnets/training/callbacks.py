"""Callbacks: the run report (model cost at the start, metrics.json, summary at the end)."""
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from bftnets.training.stats import describe_model

__all__ = ['RunReport', 'write_json']


def write_json(path: Path, data: Dict[str, Any]) -> None:
    """Write atomically: a reader (or a kill) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(data, indent=2, default=str) + '\n')
    os.replace(tmp, path)


def _scalars(metrics: Dict[str, Any]) -> Dict[str, float]:
    return {k: round(float(v), 6) for k, v in metrics.items() if isinstance(v, (int, float, torch.Tensor))
            and (not isinstance(v, torch.Tensor) or v.numel() == 1)}


class RunReport(L.Callback):
    """Prints params and MFLOPs at the start and a summary at the end; keeps ``metrics.json`` up to date
    after every validation (history per epoch, best and last checkpoint, training images/s).

    The history is part of the callback's checkpoint state, so a resumed run continues the same report.
    """

    def __init__(self, path: str, seed: Optional[int] = None, extra: Optional[Dict[str, Any]] = None):
        self.path = Path(path)
        self.seed, self.extra = seed, dict(extra or {})
        self.history = []
        self.train_seconds, self.train_images, self.skipped_total = 0.0, 0, 0
        self.model_info: Dict[str, Any] = {}
        self.status = 'running'
        self._start = None

    def state_dict(self):
        return {'history': self.history, 'train_seconds': self.train_seconds, 'train_images': self.train_images,
                'skipped_total': self.skipped_total}

    def load_state_dict(self, state):
        self.history = list(state['history'])
        self.train_seconds, self.train_images = state['train_seconds'], state['train_images']
        self.skipped_total = state.get('skipped_total', 0)

    def on_fit_start(self, trainer, pl_module):
        data = pl_module.hparams.data or {}
        model = pl_module.hparams.model
        self.model_info = describe_model(model['name'], pl_module.net, data.get('resolution', 224),
                                         model.get('in_chans', 3))
        self._print_model()
        self._wall = time.perf_counter()

    @rank_zero_only
    def _print_model(self):
        m = self.model_info
        print(f"model {m['model']}: {m['params'] / 1e6:.3f} M params, {m['mflops']:.2f} MFLOPs "
              f"(paper convention; fvcore {m['fvcore_mflops']:.2f}) at {m['in_chans']}x{m['resolution']}x{m['resolution']}", flush=True)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._start is not None:
            self.train_seconds += time.perf_counter() - self._start
            self.train_images += len(batch[1]) * trainer.world_size

    def on_train_epoch_end(self, trainer, pl_module):
        entry = {'epoch': trainer.current_epoch, 'step': trainer.global_step}
        entry.update(_scalars({k: v for k, v in trainer.callback_metrics.items()
                              if not k.endswith(('_step', '_epoch'))}))
        self.history.append(entry)
        skipped = {stage: int(entry.get(f'{stage}/skipped_images', 0)) for stage in ('train', 'val')}
        self.skipped_total += sum(skipped.values())
        if any(skipped.values()):
            self._print(f"epoch {entry['epoch']}: skipped {skipped['train']} unreadable training and "
                        f"{skipped['val']} validation images (see the warnings above)")
        self._write(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        # ModelCheckpoint runs after this callback at epoch end: refresh best/last once it has chosen them
        self._write(trainer)

    @rank_zero_only
    def _print(self, line):
        print(line, flush=True)

    def on_exception(self, trainer, pl_module, exception):
        self.status = f'stopped: {type(exception).__name__}: {exception}'
        self._write(trainer)

    def on_fit_end(self, trainer, pl_module):
        self.status = 'finished'
        self._write(trainer)
        self._print_summary(trainer)

    @property
    def images_per_second(self) -> float:
        return self.train_images / self.train_seconds if self.train_seconds else 0.0

    def metrics(self, trainer) -> Dict[str, Any]:
        ckpt = trainer.checkpoint_callback
        best_score = getattr(ckpt, 'best_model_score', None)
        last = self.history[-1] if self.history else {}
        return {
            'status': self.status, **self.model_info, 'seed': self.seed, **self.extra,
            'max_epochs': trainer.max_epochs, 'epochs_done': len(self.history), 'global_step': trainer.global_step,
            'val_top1': last.get('val/top1'), 'val_top5': last.get('val/top5'), 'val_loss': last.get('val/loss'),
            'best_val_top1': float(best_score) if best_score is not None else None,
            'best_ckpt': getattr(ckpt, 'best_model_path', None) or None,
            'last_ckpt': getattr(ckpt, 'last_model_path', None) or None,
            'train_images_per_s': round(self.images_per_second, 1), 'train_seconds': round(self.train_seconds, 1),
            'skipped_images': self.skipped_total, 'history': self.history,
        }

    @rank_zero_only
    def _write(self, trainer):
        write_json(self.path, self.metrics(trainer))

    @rank_zero_only
    def _print_summary(self, trainer):
        m = self.metrics(trainer)
        wall = time.perf_counter() - self._wall
        pct = lambda v: 'n/a' if v is None else f'{100 * v:.2f}%'  # noqa: E731
        lines = [
            f"finished {m['epochs_done']} epochs ({m['global_step']} steps) in {wall / 60:.1f} min; "
            f"training {m['train_images_per_s']:.0f} images/s",
            f"final    val top-1 {pct(m['val_top1'])}  top-5 {pct(m['val_top5'])}  loss {m['val_loss']}",
            f"best     val top-1 {pct(m['best_val_top1'])}  {m['best_ckpt']}",
            f"last     {m['last_ckpt']}",
            f"metrics  {self.path}",
        ]
        print('\n'.join(lines), flush=True)
