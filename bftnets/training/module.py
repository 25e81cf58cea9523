"""The LightningModule: cross-entropy training of any timm classifier, top-1/top-5 metrics, Appendix A
schedules stepped per optimiser step, optional EMA, and a NaN/Inf guard."""
from typing import Any, Dict, Optional

import lightning as L
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from bftnets.training.errors import ConfigError, NonFiniteLossError
from bftnets.training.factory import create_model
from bftnets.training.optim import create_optimizer, create_scheduler, steps_per_epoch

__all__ = ['ClassificationModule', 'CHECKPOINT_KEY']

CHECKPOINT_KEY = 'bftnets'  # marks a checkpoint written by this module (eval.py refuses others)
CHECKPOINT_FORMAT = 1
FACTORY = 'bftnets.training.create_model'


class ClassificationModule(L.LightningModule):
    """Args:
        model: keyword arguments of :func:`bftnets.training.create_model` (name, num_classes, in_chans,
            bft_* options); stored in the checkpoint so ``eval.py`` can rebuild the network.
        optim: keyword arguments of :func:`create_optimizer` (name, lr, momentum, nesterov, weight_decay,
            bft_weight_decay).
        sched: keyword arguments of :func:`create_scheduler` except the optimiser and run length.
        label_smoothing: cross-entropy label smoothing.
        ema_decay: keep an EMA of the weights (timm ModelEmaV3) and validate with it; None disables.
        data: facts about the input (resolution, mean, std) kept in the checkpoint for evaluation.
    """

    def __init__(self, model: Dict[str, Any], optim: Dict[str, Any], sched: Dict[str, Any],
                 label_smoothing: float = 0.0, ema_decay: Optional[float] = None,
                 data: Optional[Dict[str, Any]] = None):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f'label_smoothing must be in [0, 1), got {label_smoothing}')
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ConfigError(f'ema_decay must be in (0, 1) or null, got {ema_decay}')
        self.save_hyperparameters()
        target = model.get('_target_', FACTORY)
        if target != FACTORY:
            raise ConfigError(f'model._target_ must be {FACTORY} (it registers the bftnets models), got {target}')
        self.net = create_model(**{k: v for k, v in model.items() if k != '_target_'})
        self.ema = ModelEmaV3(self.net, decay=ema_decay) if ema_decay else None
        num_classes = model['num_classes']
        self.train_top1 = MulticlassAccuracy(num_classes, top_k=1)
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1)
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _unpack(self, batch, stage: str):
        # the ImageFolder pipeline appends the number of unreadable files it dropped from this batch; logged
        # per step and summed over the epoch (and the DDP ranks), so the run report sees it at epoch end
        if len(batch) == 3:
            self.log(f'{stage}/skipped_images', float(batch[2]), on_step=False, on_epoch=True, reduce_fx='sum',
                     sync_dist=True, batch_size=1)
        return batch[0], batch[1]

    def training_step(self, batch, batch_idx):
        x, y = self._unpack(batch, 'train')
        if len(y) == 0:  # every file of this batch was unreadable
            return None
        logits = self.net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f'loss is {loss.item()} at epoch {self.current_epoch}, step {self.global_step}: training stopped '
                f'before this step changed the weights; lower optim.lr or check the data')
        self.train_top1(logits, y)
        self.log('train/loss', loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(y))
        self.log('train/top1', self.train_top1, on_step=False, on_epoch=True, batch_size=len(y))
        self.log('train/lr', self.trainer.optimizers[0].param_groups[0]['lr'], on_step=True, on_epoch=False)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.ema is not None:
            self.ema.update(self.net, step=self.global_step)

    def _evaluate(self, batch, stage: str):
        x, y = self._unpack(batch, stage)
        if len(y) == 0:
            return None
        net = self.ema.module if self.ema is not None else self.net
        logits = net(x)
        self.val_top1(logits, y)
        self.val_top5(logits, y)
        self.log(f'{stage}/loss', F.cross_entropy(logits, y), prog_bar=True, sync_dist=True, batch_size=len(y))
        self.log(f'{stage}/top1', self.val_top1, prog_bar=True, batch_size=len(y))
        self.log(f'{stage}/top5', self.val_top5, batch_size=len(y))

    def validation_step(self, batch, batch_idx):
        return self._evaluate(batch, 'val')

    def test_step(self, batch, batch_idx):
        return self._evaluate(batch, 'test')

    def configure_optimizers(self):
        optimizer = create_optimizer(self.net, **self.hparams.optim)
        epochs = self.trainer.max_epochs
        if epochs is None or epochs < 1:
            raise ConfigError('trainer.max_epochs must be >= 1 (the schedules are defined in epochs)')
        per_epoch = steps_per_epoch(self.trainer.estimated_stepping_batches, epochs)
        scheduler = create_scheduler(optimizer, epochs=epochs, steps_per_epoch=per_epoch, **self.hparams.sched)
        return {'optimizer': optimizer, 'lr_scheduler': {'scheduler': scheduler, 'interval': 'step'}}

    def lr_scheduler_step(self, scheduler, metric):
        # timm schedulers take the update count, so a resumed run lands on exactly the same lr
        scheduler.step_update(num_updates=self.global_step)

    def on_save_checkpoint(self, checkpoint):
        checkpoint[CHECKPOINT_KEY] = {'format': CHECKPOINT_FORMAT, 'model': dict(self.hparams.model),
                                      'data': dict(self.hparams.data or {})}
