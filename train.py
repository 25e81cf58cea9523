"""Train a classifier: `python train.py [model=mobilenetv3_bft] [data=fashion_mnist] [experiment=paper/...]`.

Composes configs/train.yaml, builds the DataModule, the LightningModule and the Trainer from it, and fits.
Everything lands in one run directory (config, logs, checkpoints, metrics.json); see README.
"""
import sys

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bftnets.training import ClassificationModule, one_line_error, resolve_resume


def train(cfg: DictConfig) -> dict:
    """Fit the configured model; returns the run report (what metrics.json holds)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    plain = lambda node: OmegaConf.to_container(node, resolve=True)  # noqa: E731
    module = ClassificationModule(
        model=dict(plain(cfg.model), num_classes=datamodule.num_classes, in_chans=datamodule.in_chans),
        optim=plain(cfg.optim), sched=plain(cfg.sched), label_smoothing=cfg.label_smoothing,
        ema_decay=cfg.ema_decay,
        data={'resolution': cfg.data.resolution, 'mean': list(datamodule.mean), 'std': list(datamodule.std)})
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c]
    loggers = [instantiate(c) for c in cfg.logger.values() if c]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    resume = resolve_resume(cfg.ckpt_path, cfg.paths.output_dir, cfg.paths.outputs_root, cfg.model.name)
    if resume:
        print(f'resuming from {resume}', flush=True)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    report = next(c for c in callbacks if hasattr(c, 'metrics'))
    return report.metrics(trainer)


@hydra.main(version_base='1.3', config_path='configs', config_name='train')
def main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)['best_val_top1']
    except Exception as error:
        message = one_line_error(error)
        if message is None:
            raise
        print(message, file=sys.stderr, flush=True)
        if HydraConfig.get().mode != RunMode.MULTIRUN:  # in a sweep, go on with the next run
            sys.exit(1)
        return None


if __name__ == '__main__':
    main()
