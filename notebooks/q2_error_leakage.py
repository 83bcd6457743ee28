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
from snrmoe_lib.evaluation import records as results
from snrmoe_lib.data.io import dataset_fingerprint
from snrmoe_lib.reporting.session import start_run

run = start_run("q2_error_leakage", params_path, output_dir)
p, ds = run.params, run.dataset
th = p.thresholds
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
leakage.format_table(audit.table)

# %% [markdown]
# ## The same audit on the `estimated` error mode
#
# A second, smaller mock with the same settings but `error_mode: estimated` (the error recomputed
# from noisy counts) is generated beside the dataset and audited the same way. A warning appears
# here if the configured dataset was not made by the configured mock (then the two tables would
# compare different mocks).

# %%
audit_est, sample_est = leakage.audit_estimated(p, clean=ds)
leakage.format_table(audit_est.table) if audit_est is not None else print("no estimated-mode mock (real data)")

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
for k, d in decs.items():
    print(f"{k:9s}: s·e0 explains {100 * d.explained_total:.3f} % of Σσ² and {100 * d.explained_variance:.2f} % "
          f"of the variation between spectra; median cos(σ, e0) = {d.cosine_median:.4f}; "
          f"the top {d.n_top} pixels hold {100 * d.top_fraction:.1f} % of Σδ²")
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

# %%
verdicts = [v for k, a in audits.items() for v in leakage.gate1_verdicts(a.table, chosen, p, label=k)]
verdicts += [results.verdict("guard", "Q2", f"{k}/label_shuffle_max_abs_r2", leakage.guard_r2(a), "<",
                             p.quality.guard_max_abs_r2) for k, a in audits.items()]
print_verdicts(verdicts)
print(f"\nquality_features() representation: {chosen} ({reason})")

# invariants: the audit cannot leak by itself; pixel order is irrelevant to a linear model;
# the chosen representation passes, or the verdict says FAIL
for k, a in audits.items():
    assert leakage.guard_r2(a) < p.quality.guard_max_abs_r2, f"{k}: label-shuffle guard R² {leakage.guard_r2(a):.3f}"
    c = a.controls.set_index("control")["r2_logg"]
    assert abs(c["fixed pixel permutation"] - c["raw σ (S0)"]) < 0.01, f"{k}: pixel permutation changed the R²"
gate1 = [v for v in verdicts if v["gate"] == "Gate-1"]
chosen_row = audit.table.set_index("representation").loc[chosen]
assert chosen_row["verdict"] == "PASS" or any(v["verdict"] == "FAIL" for v in gate1), "verdict/table disagree"

metrics, extra = leakage.results_payload(audits, chosen, reason, decs, peaks)
extra["estimated_dataset"] = str(leakage.estimated_path(p)) if audit_est is not None else None
dataset = {"path": str(ds.path), "fingerprint": dataset_fingerprint(ds), "n_train": audit.sizes["train"],
           "n_val": audit.sizes["val"], "n_test": audit.sizes["test"], "split": p.split.__dict__}
out = run.finish(dataset=dataset, metrics=metrics,
                            verdicts=verdicts, extra=extra)
print(f"results: {out}")
