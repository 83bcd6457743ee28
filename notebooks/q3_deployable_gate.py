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
# # Q3 / Gate-3 and Gate-4 — a deployable gate, a regression gate, and the single-model controls
#
# The oracle experts of Q1 are routed by each spectrum's *true* SNR, which a real observation
# does not come with. Can a gate that sees only observation-quality features (the leak-free
# compression of σ = error · noise_level chosen in Q2) recover the oracle's gain by mixing the
# experts softly, ŷ = Σ p_k ŷ_k, falling back to the global model where it is unsure (max p_k < τ)?
# **Gate-3 passes if ρ = (R²_deploy − R²_global) / (R²_oracle − R²_global) reaches the threshold**
# (ρ is undefined when the oracle gap is within noise of zero). The user's planned variant, a
# *regression gate* whose weights minimise the final log g error, is compared with it.
# **Gate-4** asks whether a single model without a gate — whitened flux (flux / σ) or one Ridge
# conditioned on the quality features — comes within the margin of the deployed mixture; if it
# does, the simpler route wins. Thresholds come from the parameters.

# %% tags=["parameters"]
params_path = "../params/smoke.yaml"
output_dir = "../reports/interactive"

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from snrmoe_lib import metric, print_verdicts, verdict
from snrmoe_lib.models import mixtures as moe
from snrmoe_lib.reporting.plots import q3 as plots_moe
from snrmoe_lib.reporting.session import start_run

run = start_run("q3_deployable_gate", params_path, output_dir)
p, ds = run.params, run.dataset
split = run.split
th, g, n_boot = p.thresholds, p.gate, p.runner.n_bootstrap
names = moe.model_names(g.kind)
ds

# %% [markdown]
# ## Method
#
# * **Experts and the global model** are the Q1 Ridge models (`experts.fit_oracle_stream`: one
#   sequential pass of sufficient statistics, one Ridge per true-SNR bin after small-bin merges, α per
#   model on the validation split); the same pass feeds the gate's quality features and the controls.
#   Noise is drawn on the fly per (seed, row), so every model sees the same noisy spectra for a seed;
#   nothing of size N × pixels is held in memory.
# * **Gate input**: the quality representation chosen by the Q2 notebook (its results JSON in this
#   run's output folder, where the runner writes every notebook of a configuration), computed from
#   σ only; its templates are fitted on a seeded subsample of the training split (`gate.fit_n`).
#   Without Q2 results the notebook says so and uses `gate.representation`.
# * **Classification gates** (multinomial logistic regression, and a small torch MLP) learn the
#   true expert bin of each training spectrum from those features. Deployed = soft mixture with
#   fallback to the global model where max p_k < τ, gate kind `gate.kind`; soft without fallback
#   and hard routing (argmax) are shown for comparison.
# * **Regression gate**: mixing weights softmax(MLP(q)) over the frozen experts (and the global
#   model), trained with torch to minimise the squared log g error on the *validation* spectra,
#   which the experts did not fit.
# * **Gate-4 controls** (single models, same streaming Ridge and α path): *whitening*, Ridge on
#   noisy flux / σ; *conditional*, one Ridge on the flux plus the standardised quality features
#   and their products with the first `gate.n_flux_components` flux principal components.
# * Every number is the mean over the noise seeds; intervals are 95 % bootstrap intervals over test
#   stars (the same resampled stars for every seed and model, so differences are paired).

# %%
rep, rep_source = moe.resolve_representation(p, output_dir)
print(f"gate input representation: {rep_source}")

# %%
runs, t0 = [], time.time()
for s in p.seeds:
    runs.append(moe.run_deployable(ds, split, p, s, rep))
    print(f"seed {s}: done after {time.time() - t0:.0f} s; experts {runs[-1].info['expert_labels']}; "
          f"control α (whitening, conditional) = {runs[-1].info['alpha_whitening']:g}, "
          f"{runs[-1].info['alpha_conditional']:g}")

# %% [markdown]
# ## Are the gate's inputs leak-free?
#
# The Gate-1 test applied to exactly the features the gates see: a Ridge on them *alone* (the Q2
# audit's model: standardised features, α chosen on validation) must predict log g with R² below
# `thresholds.gate1_logg_r2_max`. The features are made from σ only, so they do not depend on
# the noise seed: one check covers every seed. A non-linear probe (gradient-boosted trees) is
# shown as well, because an MLP gate could use structure a linear audit cannot see.

# %%
leak = moe.leak_check(runs[0], p.quality.audit_alphas, n_boot, p.seeds[0])
print(f"log g from the gate inputs ({rep}, {leak['n_features']} features): linear R² = {leak['r2_linear']:.4f} "
      f"{np.round(leak['interval_linear'], 4).tolist()}, non-linear R² = {leak['r2_nonlinear']:.4f} "
      f"{np.round(leak['interval_nonlinear'], 4).tolist()}; Gate-1 threshold {th.gate1_logg_r2_max}")
assert leak["r2_linear"] < th.gate1_logg_r2_max, (
    f"LEAK: the gate's inputs ({rep}) predict log g with R² = {leak['r2_linear']:.3f} >= {th.gate1_logg_r2_max}")
if leak["r2_nonlinear"] >= th.gate1_logg_r2_max:
    print("WARNING: a non-linear model extracts log g information from the gate inputs above the threshold")

# %% [markdown]
# ## Results: one table

# %%
summary = moe.summarize(runs, n_boot, p.seeds[0])
moe.format_table(summary, g.kind)

# %%
fig = plots_moe.plot_r2_table(summary.table, names)
run.save(fig, "q3_r2_table")
plt.show()

# %% [markdown]
# ## The gate: confusion matrix, accuracy and fallback
#
# Rows: the expert bin of the true SNR; columns: the gate's most probable bin (all test spectra of
# all seeds). The fallback rate is the fraction of test spectra whose max p_k is below τ.

# %%
cm = moe.confusion(runs, g.kind)
acc = {k: moe.gate_accuracy(runs, k, n_boot, p.seeds[0]) for k in ("logistic", "mlp")}
fb = moe.fallback_rate(runs)
for k, (v, iv) in acc.items():
    print(f"{k} gate accuracy: {v:.3f} [{iv[0]:.3f}, {iv[1]:.3f}]")
print(f"fallback rate of the deployed mixture (τ = {g.tau}): {100 * fb:.1f} %")
fig = plots_moe.plot_confusion(cm, f"{g.kind} gate: confusion matrix (test spectra, {len(runs)} seeds)")
run.save(fig, "q3_confusion")
plt.show()

# %%
conf = {k: np.concatenate([r.proba[k].max(axis=1) for r in runs]) for k in ("logistic", "mlp")}
fig = plots_moe.plot_gate_confidence(conf, g.tau)
run.save(fig, "q3_gate_confidence")
plt.show()

# %% [markdown]
# ## Per-bin R²

# %%
bin_models = ["global", "oracle", moe.DEPLOYED, "regression_gate", "whitening", "conditional"]
pb = moe.per_bin(runs, bin_models, runs[0].info["bin_labels"], n_boot, p.seeds[0])
fig = plots_moe.plot_per_bin(pb, bin_models, names)
run.save(fig, "q3_per_bin")
plt.show()
pb.pivot(index="bin", columns="model", values="r2").reindex(runs[0].info["bin_labels"])[bin_models].round(3)

# %% [markdown]
# ## ρ diagram
#
# Left: each model's gain over the global model, with the oracle's gain (dashed, its interval
# shaded). Right: ρ, the share of the oracle gain a model keeps; the Gate-3 line is the threshold.

# %%
rho_models = [m for m in summary.table.index if m not in ("global", "oracle")]
fig = plots_moe.plot_rho(summary.table, rho_models, th.gate3_rho_min, names, summary.oracle_gap_interval)
run.save(fig, "q3_rho")
plt.show()
print(f"oracle gap R²(oracle) − R²(global) = {summary.oracle_gap:.4f} "
      f"[{summary.oracle_gap_interval[0]:.4f}, {summary.oracle_gap_interval[1]:.4f}]")

# %% [markdown]
# ## Regression gate against the classification gate

# %%
d_reg, d_reg_iv = summary.difference("regression_gate", moe.DEPLOYED)
print(f"R²(regression gate) − R²(deployed {g.kind} gate) = {d_reg:+.4f} [{d_reg_iv[0]:+.4f}, {d_reg_iv[1]:+.4f}]; "
      f"trained on: {runs[0].info['regression_gate_trained_on']}; mixes {runs[0].info['regression_gate_components']}")

# %% [markdown]
# ## Verdicts
#
# Gate-3: ρ of the deployed mixture ≥ `thresholds.gate3_rho_min` (UNDEFINED when the oracle gap is
# within noise). Gate-4: R²(deployed) − R²(best single-model control) ≤ `thresholds.gate4_margin`;
# **PASS means a single model comes within the margin — the simpler route wins**. The leak check
# repeats the assertion above as a recorded verdict.

# %%
t = summary.table
best_single = max(("whitening", "conditional"), key=lambda m: t.loc[m, "r2"])
d4, d4_iv = summary.difference(moe.DEPLOYED, best_single)
verdicts = [
    verdict("Gate-3", "Q3", "rho_deployed", t.loc[moe.DEPLOYED, "rho"], ">=", th.gate3_rho_min,
            (t.loc[moe.DEPLOYED, "rho_lo"], t.loc[moe.DEPLOYED, "rho_hi"]),
            note="undefined when the oracle gap's interval reaches zero"),
    verdict("Gate-4", "Q3", f"deployed_minus_{best_single}_r2", d4, "<=", th.gate4_margin, d4_iv,
            note="PASS = a single model is within the margin: the simpler route wins"),
    verdict("leak-free", "Q3", "gate_inputs_logg_r2", leak["r2_linear"], "<", th.gate1_logg_r2_max,
            leak["interval_linear"]),
]
print_verdicts(verdicts)
assert verdicts[2]["verdict"] == "PASS", "the gate inputs leak log g"
assert all(np.array_equal(r.rows, np.sort(split.test)) for r in runs), "a seed predicted other test stars"
assert np.isclose(t.loc["oracle", "delta_r2"], summary.oracle_gap) and len(runs) == len(p.seeds)
assert 0.0 <= fb <= 1.0 and cm.to_numpy().sum() == len(runs) * len(split.test)
metrics = {f"{m}_r2": metric(r.r2, (r.r2_lo, r.r2_hi), seed_std=r.r2_seed_std) for m, r in t.iterrows()}
metrics |= {"rho_deployed": metric(t.loc[moe.DEPLOYED, "rho"], (t.loc[moe.DEPLOYED, "rho_lo"], t.loc[moe.DEPLOYED, "rho_hi"])),
            "oracle_gap": metric(summary.oracle_gap, summary.oracle_gap_interval),
            "fallback_rate": metric(fb), "gate_accuracy": metric(*acc[g.kind]),
            "regression_minus_deployed_r2": metric(d_reg, d_reg_iv),
            "leak_check_r2": metric(leak["r2_linear"], leak["interval_linear"])}
out = run.finish(metrics=metrics,
                    verdicts=verdicts,
                    extra={"representation": rep, "representation_source": rep_source, "table": t.reset_index().to_dict(orient="records"),
                           "per_bin": pb.to_dict(orient="records"), "confusion": cm.to_dict(orient="split"), "leak_check": leak,
                           "runs": [r.info for r in runs]})
print("results:", out.name)
