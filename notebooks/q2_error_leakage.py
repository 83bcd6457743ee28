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
# Every feature is made from the effective error σ = error · noise_level. For each representation
# (S0 raw σ; S1a/S1b σ normalised by the flux median / norm; S2 template × scale: log s and
# log ‖σ − s·e0‖; S2b the first PCA templates; S3 11 or 21 quantiles of the sorted σ; S3b ten
# aggregate statistics; S4 log ‖σ‖) a Ridge regression on the standardised features *alone*
# predicts log g and the SNR of the spectrum (definition from `snr_bins.definition`). The α path
# is solved from one eigendecomposition of the training design; α is chosen on the validation
# block, R² is measured on the test block with a 95 % bootstrap interval; the minimum-norm
# least-squares fit is shown for reference. The audit runs on a seeded subsample of the
# configured split (`quality.audit_n_*`). "verdict" applies the Gate-1 thresholds to the point
# values; "interval verdict" to the interval ends (log g upper bound, SNR lower bound). With
# `quality.chosen: auto` the representation with the best SNR R² among those whose interval
# verdict passes (`quality.choose_by: interval`) becomes `quality_features()`.

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
# from noisy counts) is generated beside the dataset and audited the same way. A warning appears
# here if the configured dataset was not made by the configured mock (then the two tables would
# compare different mocks).

# %%
audit_est, sample_est = leakage.audit_estimated(p, clean=ds)
leakage.audit_table(audit_est.table) if audit_est is not None else print("no estimated-mode mock (real data)")

# %% [markdown]
# ## Trade-off: leakage against quality
#
# Bottom-left of the dashed lines leaks log g; the Gate-1 pass region is left of the vertical and
# above the horizontal line.

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
# itself leaks.

# %%
fig = plots_leakage.plot_controls({k: a.controls for k, a in audits.items()}, th.gate1_logg_r2_max)
run.save(fig, "q2_error_leakage_controls")
plt.show()
audit.controls.drop(columns=["r2_snr"]).round(3)

# %% [markdown]
# ## Gate-1 verdict
#
# Gate-1 per error mode for the chosen representation, and the label-shuffle guard; then a check that
# the audit agrees with itself (guard, pixel order, table and verdicts), which raises if not.

# %%
verdicts = leakage.q2_verdicts(audits, chosen, p)
print_verdicts(verdicts)
print(f"\nquality_features() representation: {chosen} ({reason})")
leakage.check_invariants(audits, chosen, verdicts, p)
metrics, extra = leakage.results_payload(audits, chosen, reason, decs, peaks, params=p)
out = run.finish(dataset=leakage.dataset_record(ds, audit, p), metrics=metrics, verdicts=verdicts, extra=extra)
print(f"results: {out}")
