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

from snrmoe_lib import print_verdicts
from snrmoe_lib.analyses import q3
from snrmoe_lib.reporting.plots import q3 as plots_q3
from snrmoe_lib.reporting.session import start_run

run = start_run("q3_deployable_gate", params_path, output_dir)
p, ds = run.params, run.dataset
split = run.split
th, g, n_boot = p.thresholds, p.gate, p.runner.n_bootstrap
names = q3.model_names(g.kind)
ds

# %% [markdown]
# ## Method
#
# * **Experts and the global model** are the Q1 Ridge models (one sequential pass of sufficient
#   statistics, one Ridge per true-SNR bin after small-bin merges, α per model on the validation
#   split); the same pass feeds the gate's quality features and the controls. Noise is drawn per
#   (seed, row), so every model sees the same noisy spectra for a seed; nothing of size N × pixels
#   is held in memory.
# * **Gate input**: the quality representation chosen by the Q2 notebook (its results in this run's
#   output folder; without them the notebook says so and uses `gate.representation`), from σ only,
#   its templates fitted on a seeded training subsample (`gate.fit_n`).
# * **Classification gates** (logistic regression, a small torch MLP) learn the true expert bin of
#   each training spectrum. Deployed = soft mixture with fallback to the global model where
#   max p_k < τ, gate kind `gate.kind`; soft without fallback and hard routing are shown too.
# * **Regression gate**: weights softmax(MLP(q)) over the frozen experts (and the global model),
#   trained to minimise the squared log g error on the *validation* spectra.
# * **Gate-4 controls** (one streamed Ridge each): *whitening* on noisy flux / σ; *conditional* on the
#   flux, the quality features and their products with the first `gate.n_flux_components` flux PCs.
# * Numbers are seed means; intervals are 95 % bootstrap intervals over test stars (the same
#   resampled stars for every seed and model, so differences are paired).

# %%
rep, rep_source = q3.resolve_representation(p, output_dir)
print(f"gate input representation: {rep_source}")

# %%
runs, t0 = [], time.time()
for s in p.seeds:
    runs.append(q3.run_deployable(ds, split, p, s, rep))
    print(f"seed {s}: done after {time.time() - t0:.0f} s; {q3.describe_run(runs[-1])}")

# %% [markdown]
# ## Are the gate's inputs leak-free?
#
# The Gate-1 test on exactly the features the gates see: the Q2 audit's Ridge on them *alone* must
# predict log g with R² below `thresholds.gate1_logg_r2_max`. They are made from σ only, so one
# check covers every noise seed. A non-linear probe (gradient-boosted trees) is shown as well: an
# MLP gate could use structure a linear audit cannot see.

# %%
leak = q3.leak_check(runs[0], p.quality.audit_alphas, n_boot, p.seeds[0])
print(q3.check_leak(leak, th.gate1_logg_r2_max, rep))  # stops here if the inputs leak

# %% [markdown]
# ## Results: one table

# %%
summary = q3.summarize(runs, n_boot, p.seeds[0])
run.save(plots_q3.plot_r2_table(summary.table, names), "q3_r2_table")
q3.format_table(summary, g.kind)

# %% [markdown]
# ## The gate: confusion matrix, accuracy and fallback
#
# Rows: the expert bin of the true SNR; columns: the gate's most probable bin (all test spectra of
# all seeds). The fallback rate is the fraction of test spectra whose max p_k is below τ.

# %%
diag = q3.gate_diagnostics(runs, g.kind, n_boot, p.seeds[0])
print(q3.describe_gates(diag, g.tau))
fig = plots_q3.plot_confusion(diag["confusion"], f"{g.kind} gate: confusion matrix (test spectra, {len(runs)} seeds)")
run.save(fig, "q3_confusion")
run.save(plots_q3.plot_gate_confidence(diag["max_proba"], g.tau), "q3_gate_confidence")

# %% [markdown]
# ## Per-bin R²

# %%
bin_models = ["global", "oracle", q3.DEPLOYED, "regression_gate", "whitening", "conditional"]
pb = q3.per_bin(runs, bin_models, runs[0].info["bin_labels"], n_boot, p.seeds[0])
run.save(plots_q3.plot_per_bin(pb, bin_models, names), "q3_per_bin")
pb.pivot(index="bin", columns="model", values="r2").reindex(runs[0].info["bin_labels"])[bin_models].round(3)

# %% [markdown]
# ## ρ diagram, and the regression gate against the classification gate
#
# Left: each model's gain over the global model, with the oracle's gain (dashed, its interval
# shaded). Right: ρ, the share of the oracle gain a model keeps; the Gate-3 line is the threshold.

# %%
rho_models = [m for m in summary.table.index if m not in ("global", "oracle")]
fig = plots_q3.plot_rho(summary.table, rho_models, th.gate3_rho_min, names, summary.oracle_gap_interval)
run.save(fig, "q3_rho")
print(f"oracle gap R²(oracle) − R²(global) = {summary.oracle_gap:.4f} "
      f"[{summary.oracle_gap_interval[0]:.4f}, {summary.oracle_gap_interval[1]:.4f}]")
print(q3.describe_regression_gate(summary, runs[0], g.kind))

# %% [markdown]
# ## Verdicts
#
# Gate-3: ρ of the deployed mixture ≥ `thresholds.gate3_rho_min` (UNDEFINED when the oracle gap is
# within noise). Gate-4: R²(deployed) − R²(best single-model control) ≤ `thresholds.gate4_margin`;
# **PASS means a single model comes within the margin — the simpler route wins**. The leak check
# is recorded as a verdict too. The runs are checked first (every seed on the same test stars, the
# oracle's ΔR² equal to the gap, the confusion matrix counting each test spectrum once per seed).

# %%
res = q3.results(p, runs, summary, diag, leak, pb, rep, rep_source, test_rows=split.test)
print_verdicts(res["verdicts"])
out = run.finish(**res)
print("results:", out.name)
