"""The interface every mock forward model implements, and a registry by name."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["PARAM_NAMES", "PARAM_SPEC_FIELD", "CONDITION_NAMES", "ForwardModel", "Observation"]

#: Stellar parameters θ in the order every model takes them (the real products' column names).
PARAM_NAMES = ("T_eff", "log_g", "M_H", "a_M", "C_M")
#: Parameter → the :class:`~snrmoe_lib.config.MockSpec` field holding its (lo, hi) sampling range.
PARAM_SPEC_FIELD = {"T_eff": "teff", "log_g": "log_g", "M_H": "m_h", "a_M": "a_m", "C_M": "c_m"}
#: Observing conditions a model reads from the params table.
CONDITION_NAMES = ("mag", "seeing", "zenith", "field_angle", "n_exp", "t_exp")


@dataclass
class Observation:
    """What a model returns for a block of stars: the arrays of the pfsspec layout and extra columns."""

    flux: np.ndarray            # (B, P) noise-free flux, median-normalised
    error: np.ndarray           # (B, P) 1-sigma error, scaled by the same factor
    mask: np.ndarray            # (B, P) int32, non-zero = bad pixel
    columns: dict = field(default_factory=dict)  # extra params-table columns, e.g. 'snr'


class ForwardModel:
    """Base class of mock forward models.

    Subclasses provide :attr:`wave` and implement :meth:`stellar` (differentiable in torch, used by
    the Fisher code) and :meth:`observe` (numpy, used by the generator).
    """

    name = "base"
    #: Version of the model's physics: raise it whenever a change alters what the model generates,
    #: so that files made by an older version are regenerated, never silently reused
    physics_version = 1

    wave: np.ndarray

    def physics_fingerprint(self) -> str:
        """What identifies the generated data besides the spec: model name and physics version
        (subclasses add a digest of their settings). Stored in every mock file."""
        return f"{self.name}:v{self.physics_version}"

    def stellar(self, theta):  # pragma: no cover - interface
        """Noise-free stellar spectrum μ(θ) for θ of shape (B, 5) in :data:`PARAM_NAMES` order.

        Takes and returns ``torch.Tensor`` so that autograd gives exact Jacobians.
        """
        raise NotImplementedError

    def normalized_flux(self, theta, table: pd.DataFrame):  # pragma: no cover - interface
        """The stored (median-normalised, noise-free) ``flux`` as a differentiable function of θ.

        ``theta`` is a (B, 5) ``torch.Tensor``; ``table`` gives the B rows' observing conditions.
        The Fisher code differentiates this; the matching σ is ``observe(...).error``.
        """
        raise NotImplementedError

    def observe(self, table: pd.DataFrame, rows: np.ndarray, seed: int, error_mode: str = "clean") -> Observation:
        """Observe the stars of ``table`` (stellar parameters and conditions per row).

        Random draws (only in ``error_mode='estimated'``) are keyed by (seed, row).
        """
        raise NotImplementedError  # pragma: no cover - interface
