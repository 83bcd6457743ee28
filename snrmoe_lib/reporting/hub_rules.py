"""What the Hub checks rather than prints: which runs used mock data, and the K-table's claims as rules.

A claim of the consensus table ("domain-split training pays most at high noise") is a statement
about numbers the runs computed; each rule below turns it into a verdict record made by the one
decision function (:func:`snrmoe_lib.evaluation.records.verdict`), so a claim can PASS, FAIL or be
INCONCLUSIVE like any gate. Rules read only the results files.
"""
from __future__ import annotations

import math
import re
from typing import Callable

from snrmoe_lib.evaluation.records import format_number, verdict
from snrmoe_lib.reporting.hub_runs import HubData, Run

__all__ = ["is_mock", "mock_labels", "K_RULES", "knowledge_check"]


def is_mock(run: Run) -> bool:
    """Whether a run's data came from the mock simulator (its parameters name a ``data.mock``, or its
    dataset record says so)."""
    data = (run.rec.get("params") or {}).get("data") or {}
    return bool(data.get("mock")) or bool((run.rec.get("dataset") or {}).get("mock"))


def mock_labels(data: HubData) -> list[str]:
    """The configurations with at least one run on mock data."""
    seen: dict[str, None] = {}
    for r in data.runs:
        if is_mock(r):
            seen.setdefault(r.label, None)
    return list(seen)


def _metric(run: Run, name: str) -> tuple[float | None, list | None]:
    m = run.rec.get("metrics", {}).get(name)
    if isinstance(m, dict):
        return m.get("value"), m.get("interval")
    return (m, None) if isinstance(m, (int, float)) else (None, None)


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


def _difference(a: tuple, b: tuple) -> tuple[float | None, list | None]:
    """a − b, with the interval [lo_a − hi_b, hi_a − lo_b] (conservative: the two intervals' extremes)."""
    (va, ia), (vb, ib) = a, b
    if not (_finite(va) and _finite(vb)):
        return None, None
    iv = None
    if ia and ib and all(_finite(x) for x in (*ia, *ib)):
        iv = [ia[0] - ib[1], ia[1] - ib[0]]
    return va - vb, iv


def _k2_gain_with_noise(run: Run) -> list[dict]:
    """K2: the SNR-oracle gain ΔR² is larger at the higher noise level (each pair of levels in the run)."""
    p = run.rec.get("params") or {}
    levels = {float((p.get("noise") or {}).get("noise_level", 1.0)): "delta_r2_snr"}
    for name in run.rec.get("metrics", {}):
        m = re.fullmatch(r"delta_r2_snr_nl([0-9.]+)", name)
        if m:
            levels[float(m.group(1))] = name
    out = []
    ordered = sorted(levels)
    for lo_level, hi_level in zip(ordered, ordered[1:]):
        diff, iv = _difference(_metric(run, levels[hi_level]), _metric(run, levels[lo_level]))
        out.append(verdict("K2-rule", "K2", f"ΔR²_snr(noise {format_number(hi_level)}) − ΔR²_snr(noise "
                           f"{format_number(lo_level)})", diff, ">", 0.0, iv))
    return out


def _k3_raw_error_leaks(run: Run) -> list[dict]:
    """K3: a Ridge on the raw error predicts log g above the Gate-1 limit (it leaks)."""
    th = ((run.rec.get("params") or {}).get("thresholds") or {}).get("gate1_logg_r2_max", 0.05)
    v, iv = _metric(run, "clean/r2_logg[S0]")
    return [verdict("K3-rule", "K3", "clean/r2_logg[S0]", v, ">", th, iv)] if v is not None else []


def _k1_ceiling_falls(run: Run) -> list[dict]:
    """K1: the median R²_max (3-D marginal) falls with magnitude (less information, lower ceiling)."""
    mags = {}
    for name in run.rec.get("metrics", {}):
        m = re.fullmatch(r"r2_max_3d_mag([0-9.]+)", name)
        if m:
            mags[float(m.group(1))] = _metric(run, name)
    ordered = sorted(mags)
    steps = [_difference(mags[a], mags[b]) for a, b in zip(ordered, ordered[1:])]
    rises = [d for d, _ in steps if d is not None]
    if not rises:
        return []
    # the smallest drop from one magnitude to the next (a value ≤ 0 would be a rise)
    return [verdict("K1-rule", "K1", "min over magnitudes of R²_max(brighter) − R²_max(fainter)", min(rises), ">=", 0.0)]


#: Claim id → (notebook the rule reads, the rule, the rule in words).
K_RULES: dict[str, tuple[str, Callable[[Run], list[dict]], str]] = {
    "K1": ("fisher_ceiling", _k1_ceiling_falls, "median R²_max never rises with magnitude"),
    "K2": ("q1_snr_headroom", _k2_gain_with_noise, "ΔR²_snr larger at the higher noise level (interval > 0)"),
    "K3": ("q2_error_leakage", _k3_raw_error_leaks, "raw-σ log g R² above the Gate-1 limit (interval)"),
}


def knowledge_check(data: HubData, label: str | None, claim: str) -> tuple[list[dict], str]:
    """The verdict records of ``claim``'s rule in run ``label`` (empty when there is no rule or no
    result), and the rule in words."""
    if claim not in K_RULES or label is None:
        return [], ""
    notebook, rule, words = K_RULES[claim]
    run = data.run(label, notebook)
    return (rule(run) if run is not None else []), words
