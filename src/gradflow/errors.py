"""Exceptions that end a run with one clear sentence instead of a traceback."""


class GradflowError(Exception):
    """Base class: the message alone is what the user sees."""


class ConfigError(GradflowError, ValueError):
    """A config value is invalid; the message names the key, the value and what is allowed."""


class DataError(GradflowError, RuntimeError):
    """Data could not be found, downloaded or read; the message says what to do."""


class DivergedError(GradflowError, RuntimeError):
    """The loss or a gradient became NaN/Inf; the message names the step and first bad layer."""
