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
# # Q1 · Is there headroom in splitting by SNR? (Gate-2)
#
# The Hub's question Q1: if every spectrum were sent to a Ridge expert trained only on its own
# true SNR bin ("oracle" routing), would log g be predicted better than by one global Ridge of the
# same kind? Part of such a gain is *blending* (averaging several models), not routing, so Gate-2 is
# decided on the **routing share**: R²(oracle) − R²(best non-routing control) ≥ the threshold (0.02),
# seed means with paired bootstrap intervals; the first-posed ΔR² = R²(oracle) − R²(global) is shown
# beside it. The user's earlier 3 × 3 T_eff × [M/H] oracle and a second noise level (the Hub's K2)
# are shown for reference, with the learning curve over training sizes and Q1.2 (which bins give the gain).

# %% tags=["parameters"]
params_path = "../params/smoke.yaml"
output_dir = "../reports/interactive"

# %%
from snrmoe_lib import print_verdicts
from snrmoe_lib.analyses import error_modes, q1
from snrmoe_lib.reporting.plots import q1 as plots_q1
from snrmoe_lib.reporting.session import start_run

run = start_run("q1_snr_headroom", params_path, output_dir)
p, ds, split = run.params, run.dataset, run.split
nl0, n_boot = p.noise.noise_level, p.runner.n_bootstrap  # nl0: the primary noise level
ds

# %% [markdown]
# ## Method
#
# * **Features**: the noisy flux `flux + N(0,1)·error·noise_level` (noise keyed by seed and row),
#   averaged over `ridge.bin_pixels` pixels; every model is fitted from Grams accumulated chunk by
#   chunk in **one pass per noise seed** (one Gram per cell of SNR bin × physical bin × training-size
#   increment; experts, global model and the learning curve's nested sizes are sums of cells).
# * **Routing**: the true SNR (`snr_bins.definition`, σ = error · noise_level), bins `snr_bins.edges`;
#   physical bins from the true T_eff and [M/H]; small bins follow `snr_bins.on_small_bin`.
# * **α** of every model is chosen from `ridge.alphas` on the validation spectra of its own bins.
# * **Seeds**: every noise seed is a full refit on its own noise realisation and its own held-out rows
#   (`controls.holdout_seed` + seed), so seeds differ in their training rows too; scores are seed means,
#   intervals resample test stars and seeds (the same draws for every model: paired), so they carry
#   the training variability and not only the test sample's.
# * **Controls** (same pass): one Ridge with an α per SNR bin; a fixed convex blend of the SNR experts
#   and the global model; the same blend of experts of *random* partitions of the same sizes. Blend
#   weights come from `controls.holdout_fraction` of the training rows (no expert sees them); the
#   best control is chosen on the validation rows. (The experts' bin plans are in the results file.)

# %%
head = q1.run_noise_levels(ds, split, p)  # noise level → the fits of every seed
q1.run_overview(head)

# %% [markdown]
# ## Global vs oracle experts

# %%
scores, summary, falls, tables = q1.score_levels(head, n_boot, p.split.seed)  # every noise level
summary.round(4)

# %% [markdown]
# ## Routing or blending? The attribution waterfall (same test stars, paired intervals)

# %%
run.save(plots_q1.waterfall_bars(falls[nl0][0], f"Where the gain comes from, noise_level {nl0:g}"), "q1_waterfall")
print(q1.describe_share(falls[nl0][1]))
falls[nl0][0].round(4)

# %% [markdown]
# ## Per-bin R² (bins of the true SNR)

# %%
run.save_all(plots_q1.per_bin_figures(tables, len(p.seeds)))
tables[nl0].round(4)

# %% [markdown]
# ## Predicted vs true log g, coloured by the true SNR (first seed, primary noise level)

# %%
run.save(plots_q1.headroom_pred_vs_true(head[nl0], q1.HEADROOM_MODELS, p.snr_bins.definition), "q1_pred_vs_true")

# %% [markdown]
# ## Where the headroom is: ΔR² by SNR bin and noise level

# %%
run.save(plots_q1.delta_heatmap(list(tables.values())), "q1_delta_r2_heatmap")
run.save(plots_q1.headroom_vs_noise(q1.delta_rows(summary), p.thresholds.gate2_delta_r2_min), "q1_headroom_vs_noise")

# %% [markdown]
# ## Q1.2 · Is the headroom mainly from the low-SNR bins? Each bin's contribution to the whole-set ΔR²
# (bin fraction × within-bin error reduction / Var log g; they sum to ΔR²), and the low bins' share.

# %%
contrib = head[nl0].bin_contributions(q1.low_bins(p.snr_bins.edges, p.snr_bins.labels), n_boot, p.split.seed)
run.save(plots_q1.contribution_bars(contrib[0], "Contribution of each bin to the oracle's ΔR²"), "q1_bin_contributions")
print(q1.describe_low_share(contrib[1]))
contrib[0].round(4)

# %% [markdown]
# ## Learning curve: Gate-2 at nested training sizes (`controls.curve_sizes`, primary noise level)

# %%
curve, pts = q1.learning_curve(head[nl0], n_boot, p.split.seed)
run.save(plots_q1.learning_curve(pts, p.thresholds.gate2_delta_r2_min, "ΔR² of log g"), "q1_learning_curve")
pts.round(4)

# %% [markdown]
# ## Clean and estimated errors (`noise.error_mode`)
#
# With estimated errors every feature of σ is made from σ̂, estimated from the same noisy realisation
# as the flux (variance model below). Q1's models see no σ: the table checks on test rows that both
# modes' passes hand the models the same noisy flux and features, so every number above holds for
# both modes; σ̂ differs from σ by the relative rms shown, which is what Q3's gate sees.

# %%
print(q1.ERROR_MODES_NOTE, "\n\nVariance model:", error_modes.ASSUMPTION)
modes_check = q1.error_modes_check(ds, split, p)  # stops here unless both modes' flux and features agree
modes_check

# %% [markdown]
# Chosen α per model (median over seeds; `at_edge`: seeds whose α sits at an end of the grid):

# %%
alphas = q1.alpha_table(head)
q1.alpha_summary(alphas)

# %% [markdown]
# ## Verdict
#
# Gate-2 (routing share) at every noise level, the first-posed ΔR² and the physical oracle beside it,
# and Q1.2. Checked first: enough seeds, every test spectrum scored once, every expert trained on at
# least `snr_bins.min_count` spectra, the oracle equal to the routed expert's prediction.

# %%
res = q1.results(p, head, scores, summary, tables, alphas, len(split.test), falls, contrib, curve, modes_check)
print_verdicts(res["verdicts"], mock=p.data.mock is not None)
run.save_predictions(**q1.prediction_record(head[nl0]))
print("results:", run.finish(**res).name)
