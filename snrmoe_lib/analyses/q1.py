"""Q1 · Is there headroom in splitting by SNR? (Gate-2)

Global Ridge against oracle experts (one Ridge per bin of the true SNR, and the user's 3 × 3
T_eff × [M/H] grid) at each noise level, over the noise seeds of a configuration: the fits
(:func:`run_headroom`), the score tables, the consistency checks, the Gate-2 verdicts and the
results payload of the notebook.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.analyses import error_modes as em
from snrmoe_lib.analyses.q1_waterfall import (CONTROLS, WATERFALL_Q1, bin_contributions, carve_holdout,
                                              control_predictions, low_bins, routing_share, seed_draws, waterfall)
from snrmoe_lib.evaluation.metrics import mae, per_bin_seed_table, r2, rmse, seed_delta_r2, seed_r2
from snrmoe_lib.evaluation.records import metric, verdict
from snrmoe_lib.features.flux import FluxFeatures
from snrmoe_lib.models.experts import OracleRun, OracleSettings, fit_oracle_stream
from snrmoe_lib.models.routing import PhysicalRouter, SNRRouter

__all__ = [
    "routers_from_params",
    "oracle_settings",
    "HEADROOM_MODELS",
    "Headroom",
    "run_headroom",
    "run_noise_levels",
    "score_levels",
    "learning_curve",
    "error_modes_check",
    "run_overview",
    "describe_share",
    "describe_low_share",
    "delta_rows",
    "prediction_record",
    "alpha_table",
    "alpha_summary",
    "scores_table",
    "headroom_metrics",
    "curve_sizes",
    "curve_points",
    "low_bins",
    "Q1CheckError",
    "check_consistency",
    "verdicts",
    "results",
    "prediction_columns",
    "ERROR_MODES_NOTE",
]

#: What the error modes mean for Q1 (recorded in the results).
ERROR_MODES_NOTE = ("Q1's models (experts, global model, non-routing controls) see only the noisy flux, one noise "
                    "draw in both error modes, and the oracles route by the true SNR: the numbers hold for clean "
                    "and estimated errors alike (checked: the noisy flux and features of both passes agree). The "
                    "estimated errors change what a deployable gate sees: Q3.")


class Q1CheckError(RuntimeError):
    """A Q1 result broke an invariant the verdicts rely on."""


def routers_from_params(params, noise_level: float | None = None) -> dict:
    """The two oracle routers of a configuration: ``{'snr': SNRRouter, 'phys': PhysicalRouter}``."""
    nl = params.noise.noise_level if noise_level is None else noise_level
    sb = params.snr_bins
    return {"snr": SNRRouter(sb.edges, sb.labels, sb.definition, nl),
            "phys": PhysicalRouter(params.experts.physical_teff_edges, params.experts.physical_m_h_edges)}


#: Names of the three compared predictions in :class:`Headroom`.
HEADROOM_MODELS = ("global", "snr_oracle", "phys_oracle")


@dataclass
class Headroom:
    """Global vs oracle experts at one noise level, over several noise seeds (one :class:`OracleRun` each).

    The test stars are the same for every seed (fixed split); only the noise differs, so the true
    SNR and the bins are shared and seed-mean scores get star-bootstrap intervals.
    """

    noise_level: float
    runs: list[OracleRun]
    seconds: float = float("nan")
    holdout: list | None = None  # per seed, the held-out training rows' record (the blends learn from them)

    def __post_init__(self):
        if not self.runs:
            raise ValueError("no runs")
        self._controls: dict = {}
        rows = self.runs[0].test_info["row"].to_numpy()
        for r in self.runs[1:]:
            if not np.array_equal(r.test_info["row"].to_numpy(), rows):
                raise ValueError("runs were predicted on different test rows")

    @property
    def info(self) -> pd.DataFrame:
        return self.runs[0].test_info

    @property
    def y(self) -> np.ndarray:
        return self.runs[0].y

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    def controls(self, k: int = -1) -> list[tuple[dict, dict]]:
        """Per seed: the non-routing controls' predictions (test, val) and blend weights, at curve point ``k``."""
        if k not in self._controls:
            self._controls[k] = [control_predictions(r.curve[k], {"test": r.test_info, "val": r.val_info,
                                                                  "holdout": r.holdout_info}) for r in self.runs]
        return self._controls[k]

    def predictions(self) -> dict[str, np.ndarray]:
        """Model name → (n_seeds, n_test) predictions (the oracles, the global model, the controls)."""
        out = {"global": np.array([r.global_prediction() for r in self.runs]),
               "snr_oracle": np.array([r.oracle_prediction("snr") for r in self.runs]),
               "phys_oracle": np.array([r.oracle_prediction("phys") for r in self.runs])}
        if self.runs[0].holdout_pred is not None:
            out |= {c: np.array([p["test"][c] for p, _ in self.controls()]) for c in CONTROLS}
        return out

    def waterfall(self, n_boot: int = 200, seed: int = 0, k: int = -1) -> tuple[pd.DataFrame, dict]:
        """The attribution waterfall (global → SNR-dependent α → fixed blend → bagging → hard oracle) and the
        routing share, at curve point ``k`` (the last: the full training set)."""
        ctrl = self.controls(k)
        names = [m for m in WATERFALL_Q1 if m in ctrl[0][0]["test"]]  # smaller sizes: no bagging control
        preds = {m: np.array([p["test"][m] for p, _ in ctrl]) for m in names}
        vals, draws = seed_draws(self.y, preds, n_boot, seed)
        y_val = self.runs[0].val_info["y"].to_numpy()
        val_r2 = {c: float(np.mean([r2(y_val, p["val"][c]) for p, _ in ctrl])) for c in CONTROLS if c in names}
        return waterfall(vals, draws, names), routing_share(vals, draws, val_r2)

    def curve(self, n_boot: int = 200, seed: int = 0) -> list[dict]:
        """Gate-2's numbers at every nested training size (the learning curve)."""
        out = []
        for k, pt in enumerate(self.runs[0].curve):
            tab, share = self.waterfall(n_boot, seed, k)
            t = tab.set_index("model")
            out.append({"n_train": int(pt.n_train), "global_r2": float(t.loc["global", "r2"]),
                        "oracle_r2": float(t.loc["oracle_hard", "r2"]),
                        "delta_r2_snr": {"value": float(t.loc["oracle_hard", "delta_vs_global"]),
                                         "interval": [float(t.loc["oracle_hard", "delta_lo"]),
                                                      float(t.loc["oracle_hard", "delta_hi"])]},
                        "routing_share_delta_r2": share})
        return out

    def bin_contributions(self, low: list[str], n_boot: int = 200, seed: int = 0) -> tuple[pd.DataFrame, dict]:
        """Each true-SNR bin's contribution to the oracle's ΔR² (Q1.2), with the low bins' share."""
        P = self.predictions()
        router = self.runs[0].families["snr"].router
        return bin_contributions(self.y, P["snr_oracle"], P["global"], self.info["snr_bin"].to_numpy(), router.labels,
                                 low, n_boot, seed)

    def scores(self, n_boot: int = 200, seed: int = 0) -> dict:
        """Seed-mean R², MAE, RMSE of each model and ΔR² of each oracle, with intervals."""
        y, P = self.y, self.predictions()
        out = {}
        for name, p in P.items():
            s = seed_r2(y, p, n_boot=n_boot, seed=seed)
            out[f"{name}_r2"] = s
            out[f"{name}_mae"] = {"value": float(np.mean([mae(y, q) for q in p])), "interval": None}
            out[f"{name}_rmse"] = {"value": float(np.mean([rmse(y, q) for q in p])), "interval": None}
        for name in ("snr_oracle", "phys_oracle"):
            out[f"delta_r2_{name.split('_')[0]}"] = seed_delta_r2(y, P[name], P["global"], n_boot=n_boot, seed=seed)
        return out

    def per_bin(self, family: str = "snr", n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
        """Per-bin table (bins of ``family``'s router, original bins) with ΔR² against the global model."""
        router = self.runs[0].families[family].router
        tab = per_bin_seed_table(self.y, self.predictions(), self.info[f"{family}_bin"].to_numpy(), router.labels,
                                 baseline="global", n_boot=n_boot, seed=seed)
        tab.insert(0, "noise_level", self.noise_level)
        return tab

    def alphas(self) -> pd.DataFrame:
        """Chosen α, its source and training count per model and seed."""
        recs = []
        for r in self.runs:
            m = r.models
            for i, nm in enumerate(m.names):
                recs.append({"noise_level": self.noise_level, "seed": r.seed, "model": nm, "alpha": float(m.alpha[i]),
                             "source": m.alpha_source[i], "at_grid_edge": bool(m.alpha_at_edge[i]),
                             "n_train": int(m.n_train[i])})
        return pd.DataFrame(recs)

    def plans(self) -> dict:
        """Each family's experts (after the small-bin policy) for every seed's training counts."""
        return {f: self.runs[0].families[f].plan.describe() for f in self.runs[0].families}


def oracle_settings(params, noise_level: float, seed: int, controls: bool = False,
                    sizes: Sequence[int] = ()) -> OracleSettings:
    """The streamed oracle fit's settings from a configuration (``ridge``, ``snr_bins``, ``data``).

    ``controls``: also the waterfall's non-routing controls on the SNR bins (and the validation
    predictions they are chosen on); ``sizes``: nested training sizes (the learning curve).
    """
    return OracleSettings(noise_level=noise_level, seed=seed, alphas=params.ridge.alphas,
                          min_count=params.snr_bins.min_count, on_small_bin=params.snr_bins.on_small_bin,
                          target=params.ridge.target, chunk_size=params.data.chunk_size, solver=params.ridge.solver,
                          controls="snr" if controls else None, predict_val=controls, sizes=tuple(sizes),
                          size_seed=params.split.seed)


def curve_sizes(params, n_fit: int) -> list[int]:
    """The configured learning-curve sizes that are smaller than the training rows the experts fit."""
    return [int(n) for n in params.controls.curve_sizes if n < n_fit]


def run_headroom(ds, split, params, noise_level: float | None = None, seeds: Sequence[int] | None = None,
                 curve: bool = False) -> Headroom:
    """Q1 at one noise level: :func:`~snrmoe_lib.models.experts.fit_oracle_stream` for every noise seed.

    Uses ``params.ridge`` (α grid, pixel binning, solver, target), ``params.snr_bins`` (edges,
    definition, small-bin policy), ``params.experts`` (physical edges), ``params.controls`` (the
    held-out rows of the fixed blends; with ``curve``, the learning-curve sizes) and
    ``params.data.chunk_size``. The experts fit the training rows less the held-out ones; every noise
    seed ``s`` holds out its own rows (seed ``controls.holdout_seed + s``), so the seeds differ in their
    training rows as well as in their noise: the seed-resampled intervals carry both.
    """
    nl = params.noise.noise_level if noise_level is None else float(noise_level)
    seeds = list(params.seeds) if seeds is None else list(seeds)
    features = FluxFeatures(params.ridge.bin_pixels)
    c = params.controls
    t0 = time.perf_counter()
    runs, records = [], []
    for s in seeds:
        fit, holdout, record = carve_holdout(split, c.holdout_fraction, c.holdout_seed + s)
        sizes = curve_sizes(params, len(fit.train)) if curve else []
        runs.append(fit_oracle_stream(ds, fit, routers_from_params(params, nl),
                                      oracle_settings(params, nl, s, True, sizes), features=features, holdout=holdout))
        records.append(record | {"noise_seed": int(s)})
    return Headroom(nl, runs, time.perf_counter() - t0, records)


def prediction_columns(h: Headroom) -> dict:
    """Model name → (n_seeds, n_test) test predictions of one noise level (the SNR oracle as ``oracle_hard``)."""
    return {("oracle_hard" if k == "snr_oracle" else k): v for k, v in h.predictions().items()}


def run_noise_levels(ds, split, params) -> dict[float, Headroom]:
    """:func:`run_headroom` at every noise level of the configuration.

    Parameters
    ----------
    ds, split, params
        As for :func:`run_headroom`.

    Returns
    -------
    dict
        Noise level → :class:`Headroom`: the primary ``noise.noise_level`` first (the only one with the
        learning curve), then every ``noise.extra_noise_levels``.
    """
    levels = [params.noise.noise_level, *params.noise.extra_noise_levels]
    return {nl: run_headroom(ds, split, params, nl, curve=nl == levels[0]) for nl in levels}


def score_levels(head: dict, n_boot: int, seed: int) -> tuple[dict, pd.DataFrame, dict, dict]:
    """Every noise level's scores, the scores table, the attribution waterfalls and the per-bin tables.

    Parameters
    ----------
    head : dict
        Noise level → :class:`Headroom` (:func:`run_noise_levels`).
    n_boot, seed : int
        Bootstrap draws and seed of the paired intervals (the same draws for every model).

    Returns
    -------
    scores : dict
        Noise level → :meth:`Headroom.scores`.
    summary : pandas.DataFrame
        :func:`scores_table` of ``scores``.
    falls : dict
        Noise level → :meth:`Headroom.waterfall` (table, routing share).
    tables : dict
        Noise level → :meth:`Headroom.per_bin` over the true-SNR bins.
    """
    scores = {nl: h.scores(n_boot=n_boot, seed=seed) for nl, h in head.items()}
    summary = scores_table(scores)
    falls = {nl: h.waterfall(n_boot, seed) for nl, h in head.items()}
    tables = {nl: h.per_bin("snr", n_boot=n_boot, seed=seed) for nl, h in head.items()}
    return scores, summary, falls, tables


def learning_curve(h: Headroom, n_boot: int, seed: int) -> tuple[list[dict], pd.DataFrame]:
    """Gate-2 at the nested training sizes of one noise level: :meth:`Headroom.curve` and its
    :func:`curve_points` table."""
    curve = h.curve(n_boot, seed)
    return curve, curve_points(curve)


def error_modes_check(ds, split, params) -> pd.DataFrame:
    """:func:`~snrmoe_lib.analyses.error_modes.flux_check` with the configuration's variance model.

    Raises
    ------
    Q1CheckError
        When the two error modes hand the models a different noisy flux or different features (Q1's
        numbers would then not hold for both modes).
    """
    check = em.flux_check(ds, split, params, em.variance_model(ds, split, params))
    if not (check[["noisy_flux_max_abs_diff", "features_max_abs_diff"]] == 0).all().all():
        raise Q1CheckError(f"the error modes' passes differ in the noisy flux or the features:\n{check}")
    return check


def prediction_record(h: Headroom) -> dict:
    """Keyword arguments of ``NotebookRun.save_predictions`` for one noise level's runs.

    Parameters
    ----------
    h : Headroom
        The runs of one noise level.

    Returns
    -------
    dict
        ``models`` (:func:`prediction_columns`), ``rows``, ``y`` and ``seeds`` of the test stars.
    """
    return {"models": prediction_columns(h), "rows": h.info["row"].to_numpy(), "y": h.y, "seeds": h.seeds}


def describe_share(share: dict) -> str:
    """One line: the routing share (oracle − best non-routing control) with its interval.

    Parameters
    ----------
    share : dict
        The second item of :meth:`Headroom.waterfall` (``control``, ``value``, ``interval``).
    """
    return f"routing share = oracle − {share['control']} = {share['value']:.4f} {[round(x, 4) for x in share['interval']]}"


def describe_low_share(low: dict) -> str:
    """One line: the share of the whole-set ΔR² that comes from the low-SNR bins, with its interval.

    Parameters
    ----------
    low : dict
        The second item of :meth:`Headroom.bin_contributions` (``bins``, ``value``, ``interval``).
    """
    return f"share from {low['bins']}: {low['value']:.3f} {np.round(low['interval'], 3).tolist()}"


def delta_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`scores_table` other than the global model, ΔR² bounds named ``lo`` / ``hi``.

    Parameters
    ----------
    summary : pandas.DataFrame
        The output of :func:`scores_table`.
    """
    return summary[summary["model"] != "global"].rename(columns={"delta_lo": "lo", "delta_hi": "hi"})


def scores_table(scores: dict) -> pd.DataFrame:
    """One row per noise level × model from ``{noise_level: Headroom.scores()}``: R² (interval), MAE,
    RMSE and ΔR² against the global model (interval)."""
    recs = []
    for nl, s in scores.items():
        for m in HEADROOM_MODELS:
            r = s[f"{m}_r2"]
            iv = r["interval"] or [np.nan, np.nan]
            rec = {"noise_level": nl, "model": m, "r2": r["value"], "r2_lo": iv[0], "r2_hi": iv[1],
                   "r2_seed_std": float(np.std(r["per_seed"], ddof=1)) if len(r["per_seed"]) > 1 else 0.0,
                   "mae": s[f"{m}_mae"]["value"], "rmse": s[f"{m}_rmse"]["value"],
                   "delta_r2": np.nan, "delta_lo": np.nan, "delta_hi": np.nan}
            if m != "global":
                d = s[f"delta_r2_{m.split('_')[0]}"]
                div = d["interval"] or [np.nan, np.nan]
                rec.update(delta_r2=d["value"], delta_lo=div[0], delta_hi=div[1])
            recs.append(rec)
    return pd.DataFrame(recs)


def headroom_metrics(scores: dict, primary: float) -> dict:
    """Results-file metrics: names without suffix at the primary noise level, ``_nl<level>`` otherwise."""
    out = {}
    for nl, s in scores.items():
        suffix = "" if nl == primary else f"_nl{nl:g}"
        for k, v in s.items():
            extra = {"per_seed": v["per_seed"]} if "per_seed" in v else {}
            out[k + suffix] = metric(v["value"], v["interval"], **extra)
    return out


def curve_points(curve: list[dict]) -> pd.DataFrame:
    """The learning curve as plot points: routing share and first-posed ΔR² per training size."""
    rows = []
    for c in curve:
        for name, key in (("routing share", "routing_share_delta_r2"), ("oracle − global", "delta_r2_snr")):
            d = c[key]
            rows.append({"n_train": c["n_train"], "series": name, "value": d["value"], "lo": d["interval"][0],
                         "hi": d["interval"][1]})
    return pd.DataFrame(rows)


def run_overview(head: dict) -> pd.DataFrame:
    """Seeds, feature count and wall time of each noise level's fits."""
    return pd.DataFrame([{"noise_level": nl, "seeds": h.seeds, "features": h.runs[0].models.coef.shape[1],
                          "seconds": round(h.seconds, 1)} for nl, h in head.items()])


def alpha_table(head: dict) -> pd.DataFrame:
    """Chosen α per noise level, seed and model."""
    return pd.concat([h.alphas() for h in head.values()])


def alpha_summary(alphas: pd.DataFrame) -> pd.DataFrame:
    """Median α over seeds per model, with the number of seeds whose α sits at an end of the grid."""
    return alphas.groupby(["noise_level", "model"], sort=False).agg(
        alpha=("alpha", "median"), at_edge=("at_grid_edge", "sum"), n_train=("n_train", "median")).reset_index()


def check_consistency(params, head: dict, tables: dict, summary: pd.DataFrame, n_test: int) -> None:
    """The invariants behind the verdicts; :class:`Q1CheckError` names the one that fails.

    Enough seeds for a verdict; every test spectrum scored in exactly one bin; every expert trained
    on at least ``min_count`` spectra; the oracle is the routed expert's own prediction; every score
    is defined.
    """
    if len(params.seeds) < params.runner.min_seeds:
        raise Q1CheckError(f"Gate-2 needs at least {params.runner.min_seeds} noise seeds (runner.min_seeds), the "
                           f"configuration has {len(params.seeds)}")
    need = max(params.snr_bins.min_count, 1)
    for nl, h in head.items():
        per_model = tables[nl].groupby("model")["n"].sum()
        if not per_model.eq(n_test).all():
            raise Q1CheckError(f"noise_level {nl:g}: the per-bin table scores {per_model.to_dict()} test "
                               f"spectra, not {n_test} each")
        for r in h.runs:
            small = [r.models.names[c] for f in r.families.values() for c in f.columns if r.models.n_train[c] < need]
            if small:
                raise Q1CheckError(f"noise_level {nl:g}, seed {r.seed}: expert(s) {small} trained on fewer "
                                   f"than min_count={need} spectra")
            e = r.families["snr"].plan.route(r.test_info["snr_bin"].to_numpy())
            if not (r.oracle_prediction("snr") == r.expert_predictions("snr")[range(len(e)), e]).all():
                raise Q1CheckError(f"noise_level {nl:g}, seed {r.seed}: the oracle is not the routed expert")
    if not summary[["r2", "mae", "rmse"]].notna().all().all():
        raise Q1CheckError("a model has an undefined R², MAE or RMSE")


def verdicts(scores: dict, shares: dict, primary: float, seeds: Sequence[int], threshold: float,
             low_share: dict | None = None) -> list[dict]:
    """Gate-2 on the routing share at every noise level, the old oracle − global number beside it, the
    physical-oracle reference, and Q1.2 (is the gain mainly from the low-SNR bins?)."""
    out = []
    for nl, s in scores.items():
        tag = "" if nl == primary else f" (noise_level {nl:g})"
        sh = shares[nl]
        out.append(verdict(f"Gate-2{tag}", "Q1", "routing_share_delta_r2", sh["value"], ">=", threshold,
                           sh["interval"], note=f"hard oracle − best non-routing control ({sh['control']}, chosen "
                                                f"on validation R² {sh['val_r2']})"))
        d = s["delta_r2_snr"]
        out.append(verdict(f"Gate-2 as first posed{tag}", "Q1", "delta_r2_snr", d["value"], ">=", threshold,
                           d["interval"], note=f"oracle − global (routing and blending together); per seed "
                                               f"{[round(x, 4) for x in d['per_seed']]}"))
        d = s["delta_r2_phys"]
        out.append(verdict(f"Q1 physical oracle{tag}", "Q1", "delta_r2_phys", d["value"], ">=", threshold,
                           d["interval"], note="reference: 3 × 3 T_eff × [M/H] oracle experts"))
    if low_share is not None:
        out.append(verdict("Q1.2", "Q1.2", "low_snr_share_of_gain", low_share["value"], ">=", 0.5, low_share["interval"],
                           note=f"share of the oracle's ΔR² from bins {low_share['bins']} (bin fraction × within-bin "
                                "gain over the whole-set variance)"))
    return out


def results(params, head: dict, scores: dict, summary: pd.DataFrame, tables: dict, alphas: pd.DataFrame,
            n_test: int, falls: dict | None = None, contributions: tuple | None = None,
            curve: list | None = None, modes_check: pd.DataFrame | None = None) -> dict:
    """Checked verdicts, metrics and payload of the notebook: ``run.finish(**results(...))``.

    ``falls``: noise level → (waterfall table, routing share) from :meth:`Headroom.waterfall`;
    ``contributions``: (table, low-bin share) from :meth:`Headroom.bin_contributions`; ``curve``:
    :meth:`Headroom.curve` at the primary noise level; ``modes_check``:
    :func:`snrmoe_lib.analyses.error_modes.flux_check` (the error modes' identity for flux-only models).

    Raises
    ------
    Q1CheckError
        When an invariant fails (see :func:`check_consistency`).
    """
    check_consistency(params, head, tables, summary, n_test)
    primary = next(iter(head))
    falls = falls or {}
    shares = {nl: f[1] for nl, f in falls.items()}
    if set(shares) != set(scores):
        raise Q1CheckError("the routing share is needed at every noise level")
    metrics = headroom_metrics(scores, primary)
    for nl, sh in shares.items():
        metrics["routing_share_delta_r2" + ("" if nl == primary else f"_nl{nl:g}")] = metric(sh["value"], sh["interval"])
    low = contributions[1] if contributions else None
    if low is not None:
        metrics["low_snr_share_of_gain"] = metric(low["value"], low["interval"])
    return {"metrics": metrics,
            "verdicts": verdicts(scores, shares, primary, head[primary].seeds, params.thresholds.gate2_delta_r2_min,
                                 low),
            "extra": {"summary": summary.to_dict(orient="records"),
                      "per_bin": pd.concat(tables.values()).to_dict(orient="records"),
                      "alphas": alphas.to_dict(orient="records"),
                      "plans": {str(nl): h.plans() for nl, h in head.items()},
                      "seconds": {str(nl): h.seconds for nl, h in head.items()},
                      "waterfall": {str(nl): f[0].to_dict(orient="records") for nl, f in falls.items()},
                      "routing_share": {str(nl): sh for nl, sh in shares.items()},
                      "blend_weights": {str(nl): [w for _, w in h.controls()] for nl, h in head.items()},
                      "bin_contributions": contributions[0].to_dict(orient="records") if contributions else None,
                      "learning_curve": curve or [],
                      "holdout": head[primary].holdout,
                      "error_modes": {"modes": [] if modes_check is None else modes_check["error_mode"].tolist(),
                                      "note": ERROR_MODES_NOTE,
                                      "check": None if modes_check is None else modes_check.to_dict(orient="records")},
                      "features": {"kind": "noisy flux", "bin_pixels": params.ridge.bin_pixels}}}
