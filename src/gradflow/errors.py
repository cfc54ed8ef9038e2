"""Exceptions that end a run with one clear sentence instead of a traceback."""

from __future__ import annotations

from typing import Any


class GradflowError(Exception):
    """Base class: the message alone is what the user sees."""


def shown(value: Any) -> str:
    """A config value as the user wrote it: strings quoted, containers as plain lists/dicts."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    return repr(value)


class ConfigError(GradflowError, ValueError):
    """A config value is not allowed: `key=value is not allowed: <what is>.`, one sentence.

    `key` is the value's config key: relative to the node being built (`depth`) when a
    constructor raises it, and `under(...)` prefixes the node's path (`model.depth`), so
    each rule is written once, where the value is used, and still names the full key.
    """

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={shown(value)} is not allowed: {allowed}.")

    def under(self, prefix: str) -> ConfigError:
        """The same error for the node at `prefix` (`data` + `batch_size` -> `data.batch_size`)."""
        return ConfigError(f"{prefix}.{self.key}", self.value, self.allowed)


class DataError(GradflowError, RuntimeError):
    """Data could not be found, downloaded or read; the message says what to do."""


class DivergedError(GradflowError, RuntimeError):
    """The loss or a gradient became NaN/Inf; the message names the step and first bad layer."""


def gradflow_cause(err: BaseException | None) -> GradflowError | None:
    """The GradflowError behind `err`: Hydra's instantiate wraps what a constructor raises."""
    while err is not None:
        if isinstance(err, GradflowError):
            return err
        err = err.__cause__ or err.__context__
    return None
