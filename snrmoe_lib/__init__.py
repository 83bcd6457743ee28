"""snrmoe_lib — SNR-aware mixtures of experts for log g from Subaru PFS medium-resolution spectra.

Light to import: heavy dependencies (torch, papermill) load only inside the functions that need them.
"""
from snrmoe_lib.config import ParameterError, Params, load_params
from snrmoe_lib.data.io import open_dataset, split_rows
from snrmoe_lib.data.mock import ensure_dataset
from snrmoe_lib.evaluation.records import find_results, metric, print_verdicts, verdict, write_results

__version__ = "0.1.0"

__all__ = ["ParameterError", "Params", "load_params", "open_dataset", "split_rows", "ensure_dataset",
           "find_results", "metric", "print_verdicts", "verdict", "write_results", "load_model", "__version__"]


def __getattr__(name: str):
    """``load_model`` is imported on first use (it needs scikit-learn; ``import snrmoe_lib`` stays light)."""
    if name == "load_model":
        from snrmoe_lib.models.deployed import load_model

        return load_model
    raise AttributeError(f"module 'snrmoe_lib' has no attribute {name!r}")
