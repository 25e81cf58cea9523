"""Training: the LightningModule, optimiser groups and Appendix A schedules, callbacks, checkpoint loading."""
from bftnets.training.callbacks import RunReport
from bftnets.training.checkpoint import load_checkpoint, module_from_checkpoint, resolve_resume
from bftnets.training.errors import ConfigError, NonFiniteLossError
from bftnets.training.factory import create_model
from bftnets.training.module import ClassificationModule
from bftnets.training.optim import create_optimizer, create_scheduler, param_groups

__all__ = ['ClassificationModule', 'ConfigError', 'NonFiniteLossError', 'RunReport', 'create_model',
           'create_optimizer', 'create_scheduler', 'load_checkpoint', 'module_from_checkpoint', 'param_groups',
           'resolve_resume', 'one_line_error']


def one_line_error(error: BaseException):
    """The message to print for an error caused by bad input (a ConfigError or NonFiniteLossError anywhere in
    the ``__cause__`` chain, as Hydra's instantiate wraps them), or None for a genuine bug."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    seen = error
    while seen is not None:
        if isinstance(seen, (ConfigError, NonFiniteLossError, MisconfigurationException)):
            return f'error: {seen}'
        seen = seen.__cause__ or seen.__context__
    return None
