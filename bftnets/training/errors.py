"""Errors that entry points report as one line instead of a stack trace."""


class ConfigError(ValueError):
    """A configuration value that cannot work; the message says what was wrong and how to fix it."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf; training stops before the bad step updates the weights."""
