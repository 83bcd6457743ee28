"""Figure helpers: one colour-blind-safe palette, and figures saved as PNG beside the report."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from snrmoe_lib.data.writers import AtomicWriter

__all__ = ["PALETTE", "interval_extent", "save_figure", "bin_colors", "label_features", "GRAVITY_FEATURES"]

# Okabe & Ito (2008) colour-blind-safe palette
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

#: Features in the MR window worth labelling (air Å)
GRAVITY_FEATURES = {
    "Ca II 8498": 8498.0, "Ca II 8542": 8542.1, "Ca II 8662": 8662.1, "Na I 8183/8195": 8189.0,
    "Mg I 8807": 8806.8, "K I 7665/7699": 7682.0, "O2 A-band": 7620.0,
}


def interval_extent(value, lo, hi) -> "np.ndarray":
    """Error-bar lengths ``[[below], [above]]`` of intervals ``[lo, hi]`` around ``value``, for ``yerr``/``xerr``.

    A percentile-bootstrap interval need not contain its point estimate, and matplotlib refuses
    negative lengths: the side the point lies beyond gets length 0 (the bar then shows the interval's
    far end honestly instead of a mirrored one). Missing bounds draw no bar.
    """
    v, lo, hi = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (value, lo, hi))
    return np.nan_to_num(np.vstack([v - lo, hi - v]).clip(min=0))


def bin_colors(n: int) -> list[str]:
    """``n`` palette colours (cycled)."""
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def save_figure(fig: "matplotlib.figure.Figure", output_dir: str | Path, name: str, dpi: int = 110) -> str:
    """Save ``fig`` as ``<output_dir>/<name>.png`` (atomically) and return the file name."""
    fname = f"{name}.png"
    with AtomicWriter(Path(output_dir) / fname, overwrite=True) as writer:
        fig.savefig(writer.tmp, format="png", dpi=dpi, bbox_inches="tight")
    return fname


def label_features(ax, features: dict[str, float] | None = None, y: float = 0.98, **kw) -> None:
    """Mark spectral features with a dotted line and a rotated label at the top of ``ax``."""
    features = GRAVITY_FEATURES if features is None else features
    lo, hi = ax.get_xlim()
    for name, w in features.items():
        if lo <= w <= hi:
            ax.axvline(w, color="0.5", lw=0.6, ls=":", zorder=0)
            ax.text(w, y, name, rotation=90, va="top", ha="right", fontsize=7, color="0.3",
                    transform=ax.get_xaxis_transform(), **kw)
