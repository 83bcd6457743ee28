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
# How much can any model learn about log g from these spectra? For each star the Cramér–Rao lower bound
# (CRLB) on log g, marginalised over the unknown nuisance parameters (3-D: T_eff and [M/H]; 5-D: also
# [α/M] and [C/M]), is the smallest variance an unbiased estimator can reach, and R²_max = 1 − CRLB /
# Var(log g) is the best R² it can score. We compute it on regular grids at magnitudes i = 18 … 23 with
# the user's method (central finite differences along the grid axes, F = Jᵀ diag(1/σ²) J, Schur
# complement), check the finite differences against exact autograd derivatives of the mock, show the
# cliff near per-pixel SNR ≈ 4, add a Bayesian bound that also holds for shrinkage (biased) estimators,
# and — when the Q1/Q3 results exist — ask how close each model comes to the ceiling of its SNR bin.
# The computations live in `snrmoe_lib.analyses.k1`, the bounds in `snrmoe_lib.ceiling`.

# %% tags=["parameters"]
params_path = "../params/smoke.yaml"
output_dir = "../reports/interactive"

# %%
import pandas as pd

from snrmoe_lib import print_verdicts
from snrmoe_lib.analyses import k1
from snrmoe_lib.reporting.plots import k1 as plots
from snrmoe_lib.reporting.session import start_run

run = start_run("fisher_ceiling", params_path, output_dir)
p, ds = run.params, run.dataset
pd.set_option("display.precision", 3)
ds

# %% [markdown]
# ## Grids, labels and priors
# One grid file per magnitude (the mock grid beside the dataset is generated when missing; set
# `fisher.grid_path` to read the user's pfsspec grid products instead). Var(log g) for R²_max comes from
# the configuration's label distribution (`fisher.var_source`). The prior variances feed the Bayesian
# bound; the prior Fisher information feeds Van Trees.

# %%
s = k1.setup(p, ds)
print(f"Var(log g) = {s.var_logg:.3f} ({p.fisher.var_source}); Jacobians: {p.fisher.method}; edges: {p.fisher.edges}")
k1.prior_table(s)

# %% [markdown]
# ## The ceiling per magnitude
# `fisher.n_stars` grid stars per magnitude. Per star: F from the Jacobian and σ = error · noise_level
# (masked pixels excluded), the marginal CRLB through the Schur complement on the unit-diagonal scaled
# matrix (solves, no inverses; stars with cond > `fisher.cond_max` are flagged, not used), the Schur
# decay (marginal / unmarginalised information) and R²_max. Summaries: median and 90th percentile of
# R²_max, and the population ceiling 1 − mean(CRLB) / Var(log g), which the worst stars dominate.

# %%
frame, table = k1.ceilings_by_magnitude(p, s)
table.set_index("mag").T

# %% [markdown]
# ## The cliff
# R²_max against per-pixel SNR. The dashed lines are the Bayesian ceiling (below): unlike the
# unbiased bound it never drops below 0, because a shrinkage estimator can always fall back on
# the prior mean.

# %%
run.save(plots.plot_cliff(frame, table), "fisher_cliff")

# %% [markdown]
# ## Where the information is: R²_max over (T_eff, log g)
# Every usable grid star at two magnitudes either side of the cliff, 3-D and 5-D marginalisation.

# %%
run.save(plots.plot_ceiling_map(k1.ceiling_maps(p, s)), "fisher_map_teff_logg")

# %% [markdown]
# ## Finite differences against autograd
# On the mock the exact Jacobian is available by automatic differentiation of the forward model.
# At the same grid stars (interior ones, central differences) the two σ_CRLB must agree within
# `fisher.fd_check_tol` (median |ratio − 1|); the remaining difference is the curvature of the
# spectrum over one grid step.

# %%
if (check := k1.fd_check(p, s)) is not None:
    run.save(plots.plot_fd_vs_autograd(check), "fisher_fd_vs_autograd")
check

# %% [markdown]
# ## Beyond the unbiased bound: Bayesian ceilings
# The CRLB binds only unbiased estimators. Ridge and other shrinkage estimators are biased and can beat
# it at low SNR: where the unbiased population ceiling 1 − mean(CRLB)/Var goes negative, any model can
# still score R² ≥ 0 by shrinking towards the prior mean. Two bounds that hold for biased estimators:
#
# * **Bayesian (Gaussian prior)**, per star [(F + Σ_π⁻¹)⁻¹]_gg with the sampling prior's variances:
#   the minimum MSE of the locally linear model under a Gaussian prior, and the floor of any
#   *linear* shrinkage estimator (Ridge) for any prior of those variances; averaged over stars.
# * **Van Trees under the sampling prior** (rigorous for every estimator, linear or not). With the
#   default beta(1.5, 1.5) the prior's Fisher information is infinite and the plain Van Trees
#   bound is vacuous; a surrogate beta(s, s) prior with finite information that the sampling prior
#   dominates (λ ≤ c·π) gives a valid, if loose, bound VT_λ / c, maximised over s.

# %%
table[k1.bound_columns(table)]

# %% [markdown]
# ## How close are the models to the limit?
# Ceilings per SNR bin of the configuration (`snr_bins`): the median per-star R²_max (the user's headline
# number), the unbiased population ceiling 1 − mean(CRLB)/Var, and the Bayesian ceiling. When the Q1/Q3
# results of this configuration exist beside this report, each model's R² per bin is set against them:
# `efficiency` = R²_model / Bayesian ceiling (a population R² bound that also binds shrinkage models),
# `efficiency_median` = R²_model / median R²_max. Var(log g) is the whole population's in every bin.

# %%
bins, bin_source, eff = k1.bin_ceilings(p, ds, s, frame, output_dir)
run.save(plots.plot_efficiency(bins, eff, "5d"), "fisher_efficiency")
print("bin ceilings from:", bin_source)
display(bins)
eff

# %% [markdown]
# ## Calibration: the mock against the real products
# The mock's median R²_max at i = 21.5 / 22 / 22.5, recomputed with the user's convention
# (Var(log g) of their grid, `fisher.reference_var_logg`), against their values from the real
# BOSZ + PFS-simulator grids.

# %%
(calib := k1.calibration_rows(table, p))

# %% [markdown]
# ## Summary
# Invariants checked here: the ceiling falls (σ_CRLB grows) monotonically with magnitude, marginalising
# over more nuisances never increases R²_max, the Schur decay lies in [0, 1], the Bayesian bound never
# exceeds the CRLB, most stars are well conditioned, and finite differences agree with autograd.

# %%
metrics, verdicts, extra = k1.k1_results(p, s, table, frame, check, calib, bins, bin_source, eff)
print_verdicts(verdicts)
out = run.finish(metrics=metrics, verdicts=verdicts, extra=extra)
print("results:", out.name)
