"""Forward models by name: what ``data.mock.model`` in the parameters refers to."""
from __future__ import annotations

from typing import Callable

from snrmoe_lib.data.mock import calibrated, simple
from snrmoe_lib.data.mock.base import ForwardModel

__all__ = ["register_model", "get_model", "model_names"]

_REGISTRY: dict[str, Callable[[], ForwardModel]] = {
    "simple": simple.SimpleMock,
    "calibrated": calibrated.shared_model,
}


def register_model(name: str, factory: Callable[[], ForwardModel]) -> None:
    """Make a forward model available to :func:`get_model` (add its name to ``config.MOCK_MODELS`` too)."""
    _REGISTRY[name] = factory


def model_names() -> list[str]:
    """The registered model names."""
    return sorted(_REGISTRY)


def get_model(name: str) -> ForwardModel:
    """The forward model registered under ``name``."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown mock model {name!r}; available: {model_names()}")
    return _REGISTRY[name]()
