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
# How much can any model learn about log g from these spectra? Per star, the Cramér–Rao lower bound
# (CRLB) on log g marginalised over the unknown nuisances (3-D: T_eff, [M/H]; 5-D: also [α/M], [C/M])
# is the smallest variance of an unbiased estimator; R²_max = 1 − CRLB / Var(log g). This notebook
# computes it **once** per magnitude (the data notebook's calibration row calls the same function),
# checks the derivatives, then asks per SNR bin of the frozen test set what *any* estimator can
# reach (Van Trees), how far the Q1/Q3 models are from it, and what a template fit that knows the
# forward model achieves. Computations: `snrmoe_lib.analyses.k1*`; bounds: `snrmoe_lib.ceiling`.

# %% tags=["parameters"]
params_path = "../params/smoke.yaml"
output_dir = "../reports/interactive"

# %%
from snrmoe_lib import print_verdicts
from snrmoe_lib.analyses import k1, k1_ceiling, k1_map
from snrmoe_lib.reporting.plots import k1 as plots
from snrmoe_lib.reporting.session import start_run

run = start_run("fisher_ceiling", params_path, output_dir, display_precision=3)
p, ds = run.params, run.dataset
model = k1.model_of(p)  # the mock's forward model; None on real data
ds

# %% [markdown]
# ## R²_max per magnitude: one computation
# `fisher.n_stars` nodes drawn (seeded) from the real grid's lattice (T_eff 3500–7000 / 250 K,
# log g 0–5 / 0.5, [M/H] −2.5…0.75 / 0.25, [α/M] = [C/M] = 0) at its fixed conditions; exact
# (autograd) Jacobians of the stored flux, streamed in batches; σ = the clean error at each magnitude;
# F = Jᵀ diag(1/σ²) J; the marginal CRLB by the Schur complement; Var(log g) = 1.667 (the user's
# convention). Headline: the **median over stars** of per-star R²_max with a bootstrap interval over
# stars; beside it the population ceiling 1 − mean(CRLB)/Var and the Gaussian-prior (Bayes) ceiling.
# On real data the same table comes from the grid products by finite differences along their lattice.
# The lattice stars' Fisher matrices are kept in the output folder (keyed by the parameters and the code),
# so a notebook of the same run that asks again reads them instead of recomputing them.

# %%
lc, table = k1.ceiling_by_magnitude(p, model, output_dir)  # shares the lattice Fishers of the run's output folder
print(k1.describe_ceiling(lc))
run.save_all(plots.ceiling_figures(lc.frame, table))
table.set_index("mag").T

# %% [markdown]
# ## Checks: step halving, Schur against the inverse, the error scaled; calibration against real grids
# Finite differences of the forward model at the grid's steps and ½, ¼, ⅛ of them against autograd, on
# `fisher.fd_check_stars` lattice stars, every magnitude (median |σ_FD/σ_AD − 1|, bootstrap interval;
# ≤ `fisher.fd_check_tol` at `fisher.fd_check_mag`). The stored flux is divided by its median over pixels,
# only piecewise smooth in θ: FD stops converging at a few tenths of a per cent, a few stars differ more
# (`extra.convergence`). Then Schur against the explicit inverse, and R²_max with σ × `fisher.error_scales`.
# Last, the calibration: the table's median R²_max against the user's real BOSZ + PFS-simulator grids.

# %%
checks = k1_ceiling.derivative_checks(p, model, lc)  # checks of the forward model's derivatives: mock only
run.save_all(plots.check_figures(checks))
display(*k1_ceiling.check_tables(checks))
(calib := k1_ceiling.calibration_rows(table, p))

# %% [markdown]
# ## Per SNR bin: bounds that hold for any estimator
# The frozen test set is the configuration's test split (the stars Q1–Q3 score on). Per bin of true
# SNR, up to `fisher.n_bin_stars` of its stars get exact Jacobians with the dataset's own σ. Bounds on
# the MSE, as R² with the bin's own Var(log g) (as the models' per-bin R²), with bootstrap intervals:
# **Van Trees under the sampling prior** (any estimator, biased or not; the beta(1.5, 1.5) prior has
# infinite Fisher information, so a dominated beta(s, s) surrogate is used: valid but loose), the
# **Gaussian-prior** bound (floor of linear shrinkage such as Ridge), and the **unbiased CRLB**
# (mean over stars, and its median star). Van Trees per bin assumes the labels do not depend on the
# SNR; the correlation table checks it.

# %%
draws = {}  # the bounds' bootstrap draws, for the paired efficiency below
ft, corr, bounds, bins_s = k1.bins_and_bounds(p, ds, model, draws)
print(f"frozen test: {ft.record}; bound stars: {bins_s:.1f} s")
display(corr)
k1.bounds_view(bounds)

# %% [markdown]
# ## Efficiency: bound MSE / model MSE, same stars, same variance
# From the Q1/Q3 results of this configuration beside this report: per bin, model MSE = (1 − R²)·Var_bin
# on the frozen test; efficiency = Van Trees MSE / model MSE (≤ 1 for every estimator; the Gaussian-prior
# and unbiased ratios are shown too). The Q1/Q3 results hold per-bin R² with intervals, not per-star
# predictions, so these intervals combine the two (conservative), not paired.

# %%
eff = k1.model_efficiency(p, bounds, output_dir)
run.save_all(plots.bin_bounds_figures(bounds, eff, "5d"))  # none on real data
eff[k1.EFFICIENCY_COLUMNS]

# %% [markdown]
# ### Paired: the models' per-star predictions on the bound's own stars
# Q1 and Q3 save every model's frozen-test predictions beside their results (keyed by the frozen test's
# fingerprint). Per bin, the model MSE is taken on exactly the stars that carry the bound, and both are
# resampled with the same bootstrap draws of those stars: efficiency = bound MSE / model MSE with a
# paired interval. A missing or mismatched predictions file is said and skipped.

# %%
preds, notes = k1.load_predictions(output_dir, run.frozen_test()["fingerprint"])
print("\n".join(notes) or f"per-star predictions of {sorted(preds)}")
paired = k1.paired_efficiency(preds, draws, "5d")
paired.round(3) if len(paired) else "no paired efficiency (no per-star predictions or no per-bin bounds)"

# %% [markdown]
# ### Every model per true-SNR bin and per magnitude: R², RMSE and bias
# On all frozen-test stars (seed means; bootstrap intervals over the stars of each bin or 0.5-mag slice).
# R² hides shrinkage toward the mean at low SNR: the bias and the residual-against-truth panels show it.

# %%
errors = k1.errors_by(preds, ft, p.runner.n_bootstrap, p.fisher.seed)  # by true-SNR bin (and magnitude)
run.save_all(plots.residual_figures(preds, ft))
display(*(e.round(3) for e in errors.values()))

# %% [markdown]
# ## The achievable floor: a MAP template fit that knows the forward model
# `fisher.map_stars` frozen-test stars (an equal share per bin), noise of the first seed, all five labels
# fitted with the mock's own forward model (prior `fisher.map_prior`; damped Gauss–Newton from the best
# `fisher.map_starts` of `fisher.map_candidates` starts); Laplace σ from the Hessian. Per bin: RMSE, bias,
# R² and the empirical / Laplace σ ratio (1 = the Fisher σ describes the errors). Mock only.

# %%
map_fit, map_stars, map_s = k1_map.map_summary(p, ds, model, ft)  # None on real data: mock only
run.save_all(plots.map_figures(map_stars, ft.labels))
map_fit["map_bins"] if map_fit is not None else "the MAP fit needs the forward model (mock only)"

# %% [markdown]
# ## Summary
# Checked: FD against autograd at the grid's steps, the Schur complement against the inverse, the mock against the
# real products, and that no model beats the Van Trees bound of its bin. Results on the mock are provisional.

# %%
bins = k1.bins_payload(ft, corr, bounds, eff, paired, errors)
res = k1.results(p, table, calib, checks, bins, map_fit, {"ceiling": lc.seconds, "bin_bounds": bins_s, "map_fit": map_s})
print_verdicts(res["verdicts"], mock=p.data.mock is not None)
print("results:", run.finish(**res).name)
