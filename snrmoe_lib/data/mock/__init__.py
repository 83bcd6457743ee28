"""The embedded mock PFS-MR simulator (a physically motivated stand-in, not BOSZ).

It writes datasets in exactly the pfsspec layout (see :mod:`snrmoe_lib.data.io`), so one loader reads
mock and real data alike. Forward models sit behind :class:`~snrmoe_lib.data.mock.base.ForwardModel`
and are looked up by name with :func:`get_model`.
"""
from snrmoe_lib.data.mock.base import PARAM_NAMES, ForwardModel, Observation
from snrmoe_lib.data.mock.registry import get_model, register_model
from snrmoe_lib.data.mock.generate import (StaleDatasetError, draw_conditions, draw_stellar, ensure_dataset, ensure_mock, grid_table, mock_is_current,
                       simulate, stored_mock_spec)

__all__ = [
    "PARAM_NAMES",
    "ForwardModel",
    "Observation",
    "get_model",
    "register_model",
    "draw_stellar",
    "draw_conditions",
    "grid_table",
    "simulate",
    "ensure_dataset",
    "ensure_mock",
    "mock_is_current",
    "stored_mock_spec",
    "StaleDatasetError",
]
