"""Typed values from plain data (YAML): the conversions and checks behind the parameter schema.

Each function names the offending key in its :class:`ParameterError`, so a typo in a configuration
file is reported as ``"mock.teff: expected a list of 2 numbers"``, never ignored.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any, Literal, Union

__all__ = ["ParameterError", "type_name", "convert", "hints", "build", "positive", "low_high", "registered"]


class ParameterError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


def type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def convert_scalar(value: Any, tp: Any, key: str) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ParameterError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParameterError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads 1e5 (no dot) as a string: accept numeric strings explicitly
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise ParameterError(f"{key}: expected a number, got {value!r}") from None
                return convert_scalar(value, tp, key)
            raise ParameterError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ParameterError(f"{key}: must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParameterError(f"{key}: expected a string, got {value!r}")
        return value
    raise ParameterError(f"{key}: unsupported type {type_name(tp)}")  # pragma: no cover


def convert(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the type ``tp`` (ints and numeric strings become floats)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(value, inner[0], key)
    if origin is Literal:
        if value not in args:
            raise ParameterError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value  # already validated when it was built
        if not isinstance(value, dict):
            raise ParameterError(f"{key}: expected a mapping of settings, got {type(value).__name__}")
        return build(tp, value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ParameterError(f"{key}: expected a list, got {value!r}")
        return [convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    return convert_scalar(value, tp, key)


@functools.lru_cache(maxsize=None)
def hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def build(cls: type, data: dict, prefix: str = "") -> Any:
    """A section from a plain mapping: unknown keys are named here, the rest in ``__post_init__``."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ParameterError(
            f"unknown parameter(s) {', '.join(where + u for u in unknown)}; "
            f"allowed in {prefix or 'the top level'}: {', '.join(sorted(names))}"
        )
    return cls(**data)


def positive(obj: Any, p: str, names: tuple[str, ...], strict: bool = True) -> None:
    for k in names:
        v = getattr(obj, k)
        if v <= 0 if strict else v < 0:
            raise ParameterError(f"{p}{k}: must be {'positive' if strict else '>= 0'}, got {v}")


def low_high(obj: Any, p: str, names: tuple[str, ...]) -> None:
    for k in names:
        v = getattr(obj, k)
        if len(v) != 2 or v[0] > v[1]:
            raise ParameterError(f"{p}{k}: expected [low, high] with low <= high, got {v}")


def registered(key: str, value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ParameterError(f"{key}: {value!r} is not a registered {what}; allowed: {', '.join(allowed)}")
