"""The value rules' one message format: each rule is a call where the value is used.

    depth = whole("depth", depth, what="the number of hidden layers")
    lr = number("lr", lr, what="the learning rate")
    position = one_of("bn_position", position, ("before", "after"))

Each returns the value when it is allowed and raises `ConfigError` otherwise, naming the
key (relative to the node being built; the builder adds the node's path), the value and
what is allowed. Bools are not numbers here, and a float is not a whole number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from gradflow.errors import ConfigError

T = TypeVar("T")


def _note(what: str) -> str:
    return f" ({what})" if what else ""


def is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return (is_whole(value) or isinstance(value, float)) and math.isfinite(value)


def whole(
    key: str,
    value: Any,
    minimum: int = 1,
    maximum: int | None = None,
    what: str = "",
    null: str = "",
) -> int:
    """`value` if it is a whole number in [minimum, maximum]; `null` says what None would mean."""
    if is_whole(value) and value >= minimum and (maximum is None or value <= maximum):
        return value
    span = f">= {minimum}" if maximum is None else f"from {minimum:,} to {maximum:,}"
    tail = f", or null {null}" if null else ""
    raise ConfigError(key, value, f"use a whole number {span}{_note(what)}{tail}")


def number(
    key: str, value: Any, above: float = 0.0, what: str = "", null: str = "", or_equal: bool = False
) -> float:
    """`value` if it is a finite number > `above` (>= with `or_equal`); `null` says what None
    would mean."""
    if is_number(value) and (value > above or (or_equal and value == above)):
        return value
    tail = f", or null {null}" if null else ""
    sign = ">=" if or_equal else ">"
    raise ConfigError(key, value, f"use a number {sign} {above:g}{_note(what)}{tail}")


def one_of(key: str, value: T, options: Iterable[Any]) -> T:
    """`value` if it is one of `options` (listed in the message otherwise)."""
    options = list(options)
    if value in options:
        return value
    raise ConfigError(key, value, "choose one of " + ", ".join(map(str, options)))


def check_params(
    params: Mapping[str, Any], known: Iterable[str], owner: str, prefix: str = ""
) -> None:
    """Every key of `params` must be one of `known`, the parameters `owner` (e.g. "the
    'elu' activation") has; a ConfigError names the first that is not, as `prefix + key`."""
    known = list(known)
    for key, value in params.items():
        if key not in known:
            listed = f"its parameters are {', '.join(known)}" if known else "it has none"
            raise ConfigError(f"{prefix}{key}", value, f"{owner} has no such parameter; {listed}")


def finite(key: str, value: Any, what: str = "") -> float:
    """`value` if it is a finite number of any sign."""
    if is_number(value):
        return value
    raise ConfigError(key, value, f"use a finite number{_note(what)}")


def joined(torch_half: Iterable[str], names: Iterable[str], what: str) -> None:
    """Fail at import when a registry's two halves list different names: what torch builds
    (`gradflow.nn`, `gradflow.data`) and what a config may say (`gradflow.rules`)."""
    if list(torch_half) != list(names):
        raise RuntimeError(f"{what}: {list(torch_half)} are built, {list(names)} are allowed")
