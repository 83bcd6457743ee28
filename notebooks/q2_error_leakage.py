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
# # Q2 / Gate-1 — does the error vector leak log g, and which compression of it is safe?
#
# The simulator computes each spectrum's expected error from its *noise-free* model flux, so the
# error vector carries the stellar lines: a linear model on the error alone can predict log g, a
# shortcut that does not exist for real observations. The Hub allows the error only after it is
# compressed into a few "observation quality" numbers. **Gate-1 passes if the chosen compression
# predicts log g with R² below the threshold while still predicting the SNR with R² above its
# threshold** (both from the parameters). The chosen compression becomes `quality_features()`
# for the deployable gate (Q3). We also ask whether the leakage survives the simulator's
# `estimated` error mode, an error derived from noisy counts as a reduction pipeline would.

# %% tags=["parameters"]
params_path = "../params/smoke.yaml"
output_dir = "../reports/interactive"

# %%
import matplotlib.pyplot as plt

from snrmoe_lib import print_verdicts
from snrmoe_lib.analyses import q2 as leakage
from snrmoe_lib.reporting.plots import q2 as plots_leakage
from snrmoe_lib.reporting.session import start_run

run = start_run("q2_error_leakage", params_path, output_dir)
p, ds, th = run.params, run.dataset, run.params.thresholds
ds

# %% [markdown]
# ## Method
#
# Every feature is made from σ = error · noise_level. For each representation (S0 raw σ; S1a/S1b σ
# normalised by the flux median / norm; S2 log s and log ‖σ − s·e0‖; S2b PCA templates; S3 11 or 21
# quantiles of the sorted σ; S3b ten aggregate statistics; S4 log ‖σ‖) a Ridge on the standardised
# features *alone* (α chosen on the validation block) predicts log g, T_eff, [M/H] (a gate that
# reads T_eff would be a physical router in disguise) and the SNR (`snr_bins.definition`). A
# **non-linear probe** — gradient-boosted trees boosting from the Ridge, early-stopped on the
# validation block — audits the representations of at most `quality.probe_max_features` features.
# R² on validation and test, each with a 95 % bootstrap interval, on a seeded subsample of the
# split (`quality.audit_n_*`). A verdict is decided on the whole interval (PASS / FAIL /
# INCONCLUSIVE). **The representation is chosen on the validation block only** (best validation
# SNR R² among those whose validation verdict passes); the test block then gives Gate-1.

# %%
sample = leakage.load_audit_sample(ds, p)
audit = leakage.run_audit(sample, p)
chosen, reason = leakage.choose_representation(audit.table, p.quality.chosen, by=p.quality.choose_by)
print(f"audit sample: {sample.sizes()} spectra; SNR definition: {sample.snr_definition}")
print(f"chosen representation: {chosen} ({reason})")

# %% [markdown]
# ## Results: clean (expected) errors

# %%
leakage.audit_table(audit.table)

# %% [markdown]
# ## The same audit on the `estimated` error mode
#
# A second, smaller mock with the same settings but `error_mode: estimated` (the error recomputed
# from noisy counts) is generated beside the dataset and audited the same way (a warning appears if
# the configured dataset was not made by the configured mock).

# %%
audit_est, sample_est = leakage.audit_estimated(p, clean=ds)
leakage.audit_table(audit_est.table) if audit_est is not None else print("no estimated-mode mock (real data)")

# %% [markdown]
# ## Trade-off: leakage against quality
#
# The Gate-1 pass region is left of the vertical and above the horizontal dashed line.

# %%
audits = {"clean": audit} | ({"estimated": audit_est} if audit_est is not None else {})
fig = plots_leakage.plot_tradeoff({k: a.table for k, a in audits.items()}, th.gate1_logg_r2_max,
                                  th.gate1_snr_r2_min, chosen)
run.save(fig, "q2_error_leakage_tradeoff")
plt.show()

# %% [markdown]
# ## Where the raw error leaks: per-pixel importance
#
# The absolute coefficients of the raw-σ (S0) Ridge for log g, per pixel (standardised units), with
# the strongest peaks named by the nearest stellar line, molecular or telluric band, or OH sky line.

# %%
decs = {k: leakage.decompose_errors(s) for k, s in {"clean": sample, "estimated": sample_est}.items() if s is not None}
peaks = leakage.importance_table(sample.wave, audit.importance)
fig = plots_leakage.plot_importance(sample.wave, audit.importance, peaks, decs["clean"].e0)
run.save(fig, "q2_error_leakage_importance")
plt.show()
peaks.round(3)

# %% [markdown]
# ## e ≈ s·e0 + δ: how much does one scaled template explain, and where does δ sit?

# %%
print(leakage.decomposition_summary(decs))
fig = plots_leakage.plot_decomposition(sample.wave, decs["clean"], "clean")
run.save(fig, "q2_error_leakage_decomposition")
plt.show()
decs["clean"].peaks.round(4)

# %% [markdown]
# ## Sanity checks and controls
#
# A fixed pixel permutation must leave a linear model's leakage unchanged; a per-spectrum shuffle
# destroys the alignment with spectral features; the mask alone and the aggregate statistics
# alone should not predict log g; and a label shuffle must give R² ≈ 0 — otherwise the audit
# itself leaks. The shuffle is one fixed row → fake-label mapping across the blocks, fitted on the
# raw σ and (Ridge and probe) on the chosen representation.

# %%
fig = plots_leakage.plot_controls({k: a.controls for k, a in audits.items()}, th.gate1_logg_r2_max)
run.save(fig, "q2_error_leakage_controls")
plt.show()
audit.controls.drop(columns=["r2_snr"]).round(3)

# %% [markdown]
# ## Gate-1 verdict
#
# Gate-1 per error mode for the chosen representation (each label under the Ridge and the probe,
# and the SNR) and the label-shuffle guards; then a check that the audit agrees with itself.

# %%
guards = leakage.guard_chosen({"clean": sample} | ({"estimated": sample_est} if sample_est else {}), chosen, p)
verdicts = leakage.q2_verdicts(audits, chosen, p, guards)
print_verdicts(verdicts, mock=p.data.mock is not None)
print(f"\nquality_features() representation: {chosen} ({reason})")
leakage.check_invariants(audits, chosen, verdicts, p)
metrics, extra = leakage.results_payload(audits, chosen, reason, decs, peaks, params=p, guards=guards)
out = run.finish(dataset=leakage.dataset_record(ds, audit, p), metrics=metrics, verdicts=verdicts, extra=extra)
print(f"results: {out}")
