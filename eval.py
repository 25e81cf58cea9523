"""Evaluate a checkpoint: `python eval.py ckpt_path=outputs/.../checkpoints/best-....ckpt [data=...]`.

Loads it safely (weights only; a file train.py did not write is refused with a clear error), then reports
top-1, top-5, loss, params, MFLOPs and inference throughput to the console and to a JSON file.
"""
import sys

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from bftnets.training import load_checkpoint, module_from_checkpoint, one_line_error
from bftnets.training.callbacks import write_json
from bftnets.training.stats import describe_model, measure_throughput


def evaluate(cfg: DictConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    checkpoint = load_checkpoint(cfg.ckpt_path)
    module = module_from_checkpoint(checkpoint)
    if module.ema is not None and not cfg.use_ema:
        module.ema = None
    resolution = cfg.resolution or module.hparams.data['resolution']
    datamodule = instantiate(cfg.data, resolution=resolution)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False, max_epochs=1)
    scores = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    net = module.ema.module if module.ema is not None else module.net
    model = module.hparams.model
    result = {'ckpt_path': str(cfg.ckpt_path), 'epoch': checkpoint.get('epoch'),
              'dataset': cfg.data._target_, **describe_model(model['name'], net, resolution, model['in_chans']),
              'top1': scores['test/top1'], 'top5': scores['test/top5'], 'loss': scores['test/loss'],
              'images_per_s': measure_throughput(net, resolution, model['in_chans'], cfg.throughput_batch)}
    write_json(cfg.output, result)
    print(f"{result['model']} @ {resolution}: top-1 {100 * result['top1']:.2f}%  top-5 {100 * result['top5']:.2f}%  "
          f"loss {result['loss']:.4f}  {result['params'] / 1e6:.3f} M params  {result['mflops']:.2f} MFLOPs  "
          f"{result['images_per_s']:.0f} images/s (batch {cfg.throughput_batch})\nwrote {cfg.output}", flush=True)
    return result


@hydra.main(version_base='1.3', config_path='configs', config_name='eval')
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except Exception as error:
        message = one_line_error(error)
        if message is None:
            raise
        print(message, file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == '__main__':
    main()
