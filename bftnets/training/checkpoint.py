"""Safe checkpoint loading (``torch.load(weights_only=True)``) and the ``ckpt_path=last`` lookup."""
import os
import pickle
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from bftnets.training.errors import ConfigError
from bftnets.training.module import CHECKPOINT_KEY, ClassificationModule

__all__ = ['load_checkpoint', 'module_from_checkpoint', 'resolve_resume']


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Read a checkpoint written by train.py without unpickling arbitrary objects; clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f'checkpoint {path} does not exist')
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f'{path} is not a bftnets checkpoint: safe loading refused it ({first})') from e
    except Exception as e:
        raise ConfigError(f'{path} is not a readable PyTorch checkpoint ({type(e).__name__}: '
                          f'{str(e).strip().splitlines()[0] if str(e).strip() else "no detail"})') from e
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint or 'state_dict' not in checkpoint:
        raise ConfigError(f'{path} is not a bftnets checkpoint (no {CHECKPOINT_KEY!r} entry; train.py writes them)')
    return checkpoint


def module_from_checkpoint(checkpoint: Dict[str, Any]) -> ClassificationModule:
    """Rebuild the LightningModule (network, EMA copy) from a checkpoint dict and load its weights."""
    module = ClassificationModule(**checkpoint['hyper_parameters'])
    module.load_state_dict(checkpoint['state_dict'])
    return module


def resolve_resume(ckpt_path: Optional[str], run_dir: str, outputs_root: str, model_name: str) -> Optional[str]:
    """The checkpoint to resume from, or None to start afresh.

    - ``<run_dir>/checkpoints/last.ckpt`` exists (a run re-started in the same directory): resume it.
    - ``ckpt_path=last``: the newest ``last.ckpt`` under ``outputs_root`` (it must be for ``model_name``).
    - any other value: that file.
    """
    own = Path(run_dir) / 'checkpoints' / 'last.ckpt'
    if ckpt_path in (None, '', 'last') and own.is_file():
        return str(own)
    if ckpt_path in (None, ''):
        return None
    if ckpt_path == 'last':
        candidates = sorted(Path(outputs_root).glob('**/checkpoints/last.ckpt'), key=os.path.getmtime)
        if not candidates:
            raise ConfigError(f'ckpt_path=last: no last.ckpt under {outputs_root}; pass ckpt_path=<file>')
        newest = candidates[-1]
        trained = load_checkpoint(newest)[CHECKPOINT_KEY]['model'].get('name')
        if trained != model_name:
            raise ConfigError(f'ckpt_path=last: the newest checkpoint {newest} is for model {trained!r}, not '
                              f'{model_name!r}; pass ckpt_path=<file> or model.name={trained}')
        return str(newest)
    load_checkpoint(ckpt_path)  # a clear error now rather than deep inside the Trainer
    return ckpt_path
