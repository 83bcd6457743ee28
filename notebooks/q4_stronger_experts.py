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
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Q4 · Stronger experts — does an SNR mixture still pay once the experts are strong?
#
# The users' reading of Q1–Q3 was "the gate is fine, the experts are too weak". Here every expert
# **family** (Ridge; gradient-boosted trees; a neural 1-D CNN trunk with one head per SNR bin) is fitted
# as a global model, as SNR experts routed by the hard oracle, the soft oracle and Q3's deployed gate,
# and as a single conditional model (the control: the quality features as extra inputs; for the nets,
# a FiLM-conditioned trunk); a **residual mixture** adds light per-bin correctors to a frozen strong
# global model (the trees', and the nets' own). One table on the frozen test
# stars with paired intervals, ρ against each family's best matched oracle, per-bin R², calibrated
# (split-conformal) intervals with their coverage per SNR bin, and a learning curve per family. The
# verdict per family is the routing share of Q1 and the deployed gain, both against the family's best
# non-routing model.

# %% tags=["parameters"]
params_path = "../params/smoke.yaml"
output_dir = "../reports/interactive"

# %%
from snrmoe_lib import print_verdicts
from snrmoe_lib.analyses import q3, q4, q4_bound, q4_report
from snrmoe_lib.reporting.plots import q4 as plots_q4
from snrmoe_lib.reporting.session import start_run

run = start_run("q4_stronger_experts", params_path, output_dir)
p, ds, split = run.params, run.dataset, run.split
n_boot, boot_seed, fams = p.runner.n_bootstrap, p.seeds[0], p.q4.families
ds

# %% [markdown]
# ## Method
#
# * **One pass per noise seed** through the split (noise keyed by (seed, row), flux binned as in Q1)
#   keeps the binned flux of at most `q4.max_train_rows` training spectra (a seeded subsample) and of
#   every validation and test spectrum in memory, with the gate's quality features and the true SNR.
# * **Selection on validation only**: Ridge α, the boosting rounds (early stopping on the validation
#   rows of each expert's own bin), the deployed mixture's τ; the test stars only score.
# * **Gates**: Q3's deployed gate (quality features) and soft oracle (the same gate fed the true log SNR),
#   trained once per seed, mix every family's experts.
# * **Nets** (`q4.neural_*`): at most `q4.neural_train_rows` of the rows, T_eff and [M/H] as auxiliary
#   targets, early stopping on validation; one trunk + K heads serves the oracles and the deployed
#   mixture, a second trunk is the frozen global model of the nets' residual mixture (`neural_global`).
#   Sized to run in minutes on 2 cores, far from converged: `params/experts_large.yaml` is the real test.
# * **Intervals**: split-conformal on the validation residuals of each model, per SNR bin (Mondrian);
#   the nets' Gaussian σ is calibrated the same way on |y − ŷ| / σ (a per-bin scale of the predicted σ).
# * **Efficiency** against the per-bin bound is computed by the Fisher notebook (it runs after this one
#   and reads this notebook's per-star test predictions, paired with the bound's own stars).

# %%
rep, rep_source = q3.resolve_representation(p, output_dir)
print(f"gate input representation: {rep_source}")
runs = q4.run(ds, split, p, rep)

# %% [markdown]
# ## Results: one table (frozen test stars; intervals resample stars, the same for every model: paired)

# %%
summary = q4.summarize(runs, fams, p.q4.residual_base, n_boot, boot_seed)
run.save(plots_q4.plot_table(summary.table), "q4_r2_table")
q4.format_table(summary)

# %% [markdown]
# ## Per-bin R²

# %%
residuals = [m for m in summary.table.index if m.endswith("residual_mixture")]
bin_models = [f"{f}_{v}" for f in fams for v in ("global", "oracle_hard", "deployed")] + residuals
pb = q4.per_bin(runs, bin_models, n_boot, boot_seed)
run.save(plots_q4.plot_per_bin(pb, bin_models), "q4_per_bin")
pb.pivot_table(index="model", columns="bin", values="r2", sort=False).round(3)

# %% [markdown]
# ## Calibrated intervals: coverage of the 68 % and 95 % conformal intervals per SNR bin (%), and PIT
#
# The nets' rows are σ-scaled (per-star widths); below, how their raw Gaussian σ covers before calibration.

# %%
cov = q4_report.coverage(runs, list(summary.table.index), n_boot, boot_seed)
run.save(plots_q4.plot_coverage(cov, [f"{f}_deployed" for f in fams] + residuals), "q4_coverage")
pits = q4_report.pit(runs, [f"{f}_deployed" for f in fams] + residuals)
run.save(plots_q4.plot_pit(pits), "q4_pit")
q4_report.coverage_summary(cov)

# %%
q4_report.coverage_summary(cov, "gaussian") if (cov["method"] == "gaussian").any() else print("no model predicts a σ")

# %% [markdown]
# ## Predicted σ (the 68 % half-width) against each star's CRLB σ of log g, per SNR bin (mock only)

# %%
bound = q4_bound.crlb_sigma(p, ds, runs[0])
sigma = None if isinstance(bound, str) else q4_bound.sigma_table(runs[0], bin_models, *bound)
sigma.round(3) if sigma is not None else print(bound)

# %% [markdown]
# ## Learning curve: R² against training spectra per family
# Each family refitted at the nested sizes `q4.curve_sizes` (and the full set). The default configuration
# fits the full set only (refitting the trees took 2 of Q4's 5 minutes); `params/experts_large.yaml` has
# the curve from 10,000 to 210,000 spectra.

# %%
curve = q4_report.with_full_size(q4_report.curve_table(runs, n_boot, boot_seed), summary, runs)
run.save(plots_q4.plot_learning_curve(curve), "q4_learning_curve")
curve.pivot_table(index=["family", "model"], columns="n_train", values="r2", sort=False).round(3)

# %% [markdown]
# ## Verdicts: does an SNR mixture still pay? (routing share and deployed gain per family, paired intervals)

# %%
shares = q4_report.shares(summary, runs, fams)
res = q4_report.results(p, runs, summary, pb, cov, curve, shares, pits, rep, rep_source, sigma)
print_verdicts(res["verdicts"], mock=p.data.mock is not None)
assert set(f"{f}_{v}_r2" for f in fams for v in q4.VARIANTS) <= set(res["metrics"]), "a table row is missing"
assert "neural" not in fams or "film_conditional_r2" in res["metrics"], "the nets' FiLM control is missing"
out = run.finish(**res)
run.save_predictions(q4.prediction_columns(runs), runs[0].rows, runs[0].y["test"], [r.seed for r in runs])
print("results:", out.name)
