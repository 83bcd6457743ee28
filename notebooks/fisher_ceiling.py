# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # K1 · The Fisher / Cramér–Rao ceiling on log g
#
# How much can any model learn about log g from these spectra? For each star the Cramér–Rao lower
# bound (CRLB) on log g, marginalised over the unknown nuisance parameters (3-D: T_eff and [M/H];
# 5-D: also [α/M] and [C/M]), is the smallest variance an unbiased estimator can reach, and
# R²_max = 1 − CRLB / Var(log g) is the best R² it can score. We compute it on regular grids at
# magnitudes i = 18 … 23 with the user's method (central finite differences along the grid axes,
# F = Jᵀ diag(1/σ²) J, Schur complement), check the finite differences against exact autograd
# derivatives of the mock, show the cliff near per-pixel SNR ≈ 4, add a Bayesian bound that also
# holds for shrinkage (biased) estimators, and — when the Q1/Q3 results exist — ask how close each
# model comes to the ceiling of its SNR bin.

# %% tags=["parameters"]
params_path = "../params/smoke.yaml"
output_dir = "../reports/interactive"

# %%
import numpy as np
import pandas as pd

from snrmoe_lib import metric, print_verdicts, verdict
from snrmoe_lib.ceiling import fisher
from snrmoe_lib.reporting.plots import k1 as plots_fisher
from snrmoe_lib.data.mock import get_model
from snrmoe_lib.data.noise import bin_labels
from snrmoe_lib.reporting.session import start_run

run = start_run("fisher_ceiling", params_path, output_dir)
p, ds = run.params, run.dataset
f = p.fisher
pd.set_option("display.precision", 3)
ds

# %% [markdown]
# ## Grids, labels and priors
# One grid file per magnitude (the mock grid beside the dataset is generated when missing; set
# `fisher.grid_path` to read the user's pfsspec grid products instead). Var(log g) for R²_max comes
# from the configuration's label distribution (`fisher.var_source`). The prior variances feed the
# Bayesian bound; the prior Fisher information feeds Van Trees.

# %%
files = fisher.ensure_grid(p)
model = get_model(p.data.mock.model) if p.data.mock is not None else None
var_logg = fisher.label_variance(p, f.var_source, ds)
prior_var = fisher.prior_variances(p.data.mock if p.data.mock is not None else ds.params)
prior_info = fisher.prior_informations(p.data.mock) if p.data.mock is not None else None
print(f"Var(log g) = {var_logg:.3f} ({f.var_source}); Jacobians: {f.method}; edges: {f.edges}")
pd.DataFrame({"prior variance": prior_var, "prior Fisher information": prior_info if prior_info is not None else np.nan},
             index=fisher.PARAM_NAMES)

# %% [markdown]
# ## The ceiling per magnitude
# `fisher.n_stars` grid stars per magnitude. Per star: F from the Jacobian and σ = error ·
# noise_level (masked pixels excluded), the marginal CRLB through the Schur complement on the
# unit-diagonal scaled matrix (solves, no inverses; stars with cond > `fisher.cond_max` are
# flagged, not used), the Schur decay (marginal / unmarginalised information) and R²_max.
# Summaries: median and 90th percentile of R²_max, and the population ceiling
# 1 − mean(CRLB) / Var(log g), which the worst stars dominate.

# %%
per_mag = {m: fisher.grid_star_frame(path, p, var_logg, prior_var, model=model) for m, path in files.items()}
frame = pd.concat([fr for fr, _ in per_mag.values()], ignore_index=True)
table = fisher.ceiling_by_magnitude(frame, var_logg, {m: F for m, (_, F) in per_mag.items()}, p)
table.set_index("mag").T

# %% [markdown]
# ## The cliff
# R²_max against per-pixel SNR. The dashed lines are the Bayesian ceiling (below): unlike the
# unbiased bound it never drops below 0, because a shrinkage estimator can always fall back on
# the prior mean.

# %%
fig = plots_fisher.plot_cliff(frame, table)
run.save(fig, "fisher_cliff")

# %% [markdown]
# ## Where the information is: R²_max over (T_eff, log g)
# Every usable grid star at two magnitudes either side of the cliff, 3-D and 5-D marginalisation.

# %%
map_mags = [m for m in (21.5, 22.5) if m in files] or list(files)[:2]
maps = {m: fisher.grid_star_frame(files[m], p, var_logg, model=model, n_stars=None)[0] for m in map_mags}
fig = plots_fisher.plot_ceiling_map(maps)
run.save(fig, "fisher_map_teff_logg")

# %% [markdown]
# ## Finite differences against autograd
# On the mock the exact Jacobian is available by automatic differentiation of the forward model.
# At the same grid stars (interior ones, central differences) the two σ_CRLB must agree within
# `fisher.fd_check_tol` (median |ratio − 1|); the remaining difference is the curvature of the
# spectrum over one grid step.

# %%
check_mag = 21.5 if 21.5 in files else list(files)[0]
check = fisher.fd_autograd_check(files[check_mag], p, model, var_logg) if model is not None else None
if check is not None:
    fig = plots_fisher.plot_fd_vs_autograd(check)
    run.save(fig, "fisher_fd_vs_autograd")
check

# %% [markdown]
# ## Beyond the unbiased bound: Bayesian ceilings
# The CRLB binds only unbiased estimators. Ridge and other shrinkage estimators are biased and can
# beat it at low SNR: where the unbiased population ceiling 1 − mean(CRLB)/Var goes negative, any
# model can still score R² ≥ 0 by shrinking towards the prior mean. Two bounds that hold for
# biased estimators:
#
# * **Bayesian (Gaussian prior)**, per star [(F + Σ_π⁻¹)⁻¹]_gg with the sampling prior's variances:
#   the minimum MSE of the locally linear model under a Gaussian prior, and the floor of any
#   *linear* shrinkage estimator (Ridge) for any prior of those variances; averaged over stars.
# * **Van Trees under the sampling prior** (rigorous for every estimator, linear or not). With the
#   default beta(1.5, 1.5) the prior's Fisher information is infinite and the plain Van Trees
#   bound is vacuous; a surrogate beta(s, s) prior with finite information that the sampling prior
#   dominates (λ ≤ c·π) gives a valid, if loose, bound VT_λ / c, maximised over s.

# %%
cols = ["mag", "snr_pixel", "median_r2_3d", "pop_r2_3d", "bayes_r2_3d", "median_r2_5d", "pop_r2_5d", "bayes_r2_5d"]
cols += [c for c in ("vantrees_r2_3d", "vantrees_r2_5d", "vantrees_shape_5d") if c in table]
table[cols]

# %% [markdown]
# ## How close are the models to the limit?
# Ceilings per SNR bin of the configuration (`snr_bins`): the median per-star R²_max (the user's
# headline number), the unbiased population ceiling 1 − mean(CRLB)/Var, and the Bayesian ceiling.
# When the Q1/Q3 results of this configuration exist beside this report, each model's R² per bin
# is set against them: `efficiency` = R²_model / Bayesian ceiling (a population R² bound that also
# binds shrinkage models), `efficiency_median` = R²_model / median R²_max. Var(log g) is the whole
# population's in every bin.

# %%
bin_frame, bin_source = fisher.bin_star_frame(p, ds, frame, var_logg, prior_var, model=model)
bins = fisher.ceiling_per_bin(bin_frame, f"snr_{p.snr_bins.definition}", p.snr_bins.edges,
                              bin_labels(p.snr_bins.edges, p.snr_bins.labels), var_logg)
models = fisher.model_bin_r2(output_dir, config=p.name, noise_level=p.noise.noise_level)
eff = fisher.efficiency_table(models, bins, "5d")
fig = plots_fisher.plot_efficiency(bins, eff, "5d")
run.save(fig, "fisher_efficiency")
print("bin ceilings from:", bin_source)
bins

# %%
eff

# %% [markdown]
# ## Calibration: the mock against the real products
# The mock's median R²_max at i = 21.5 / 22 / 22.5, recomputed with the user's convention
# (Var(log g) of their grid, `fisher.reference_var_logg`), against their values from the real
# BOSZ + PFS-simulator grids.

# %%
calib = fisher.calibration_rows(table, p)
calib

# %% [markdown]
# ## Summary
# Invariants checked here: the ceiling falls (σ_CRLB grows) monotonically with magnitude,
# marginalising over more nuisances never increases R²_max, the Schur decay lies in (0, 1], the
# Bayesian bound never exceeds the CRLB, and finite differences agree with autograd within the
# tolerance.

# %%
t = table.sort_values("mag")
verdicts = []
if check is not None:
    fd_err = float(np.nanmedian(np.abs(check["ratio_5d"] - 1)))
    verdicts.append(verdict("K1-check", "K1", "fd_vs_autograd_median_abs_rel_diff_5d", fd_err, "<=", f.fd_check_tol))
for _, row in calib.dropna().iterrows():
    verdicts.append(verdict("K1-calibration", "K1", f"mock_vs_real_r2_3d_mag{row['mag']:g}",
                            abs(row["diff_3d"]), "<=", f.calibration_tol, note="|mock − real| median R²_max (3-D)"))
print_verdicts(verdicts)

assert np.all(np.diff(t["sigma_3d"]) > 0) and np.all(np.diff(t["sigma_5d"]) > 0), "ceiling not monotonic in magnitude"
assert np.all(frame["crlb_5d"].dropna() >= frame.loc[frame["crlb_5d"].notna(), "crlb_3d"] * (1 - 1e-9))
assert frame[["schur_3d", "schur_5d"]].dropna().apply(lambda s: s.between(0, 1 + 1e-9)).all().all()
assert np.all(frame["bcrlb_5d"] <= frame["crlb_5d"].fillna(np.inf) * (1 + 1e-9))
assert frame["crlb_5d"].notna().mean() > 0.5, "most stars flagged ill-conditioned"
if check is not None:
    assert fd_err <= f.fd_check_tol, f"finite differences disagree with autograd: median |ratio − 1| = {fd_err:.3f}"

metrics = {}
for _, row in t.iterrows():
    for tag in ("3d", "5d"):
        metrics[f"median_r2_max_{tag}_mag{row['mag']:g}"] = metric(row[f"median_r2_{tag}"])
        metrics[f"pop_r2_max_{tag}_mag{row['mag']:g}"] = metric(row[f"pop_r2_{tag}"])
        metrics[f"bayes_r2_{tag}_mag{row['mag']:g}"] = metric(row[f"bayes_r2_{tag}"])
out = run.finish(metrics=metrics, verdicts=verdicts,
                    extra={"ceiling_table": table.to_dict(orient="records"), "bin_ceilings": bins.to_dict(orient="records"),
                           "bin_source": bin_source, "efficiency": eff.to_dict(orient="records"),
                           "calibration": calib.to_dict(orient="records"), "var_logg": var_logg,
                           "grid_files": {str(m): str(path) for m, path in files.items()},
                           "fd_check": None if check is None else check.to_dict(orient="records")})
print("results:", out.name)
