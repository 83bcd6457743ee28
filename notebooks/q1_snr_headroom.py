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
# same kind? Gate-2 passes when ΔR² = R²(oracle SNR experts) − R²(global) ≥ the threshold of the
# configuration (0.02), averaged over the noise seeds, with a bootstrap interval. For reference the
# notebook also fits the user's earlier oracle, 9 experts on a 3 × 3 T_eff × [M/H] grid, and repeats
# everything at a second noise level to show how the headroom changes with noise (the Hub's K2).

# %% tags=["parameters"]
params_path = "../params/smoke.yaml"
output_dir = "../reports/interactive"

# %%
from snrmoe_lib import print_verdicts
from snrmoe_lib.analyses import q1
from snrmoe_lib.reporting.plots import q1 as plots_q1
from snrmoe_lib.reporting.session import start_run

run = start_run("q1_snr_headroom", params_path, output_dir)
p, ds = run.params, run.dataset
split = run.split
noise_levels = [p.noise.noise_level, *p.noise.extra_noise_levels]
n_boot = p.runner.n_bootstrap
ds

# %% [markdown]
# ## Method
#
# * **Features**: the noisy flux `flux + N(0,1)·error·noise_level`, drawn on the fly for every
#   spectrum from the noise seed and its row number, averaged over `ridge.bin_pixels` adjacent
#   pixels. Nothing of size N × pixels is ever held: each model is fitted from sufficient statistics
#   (Grams) accumulated in float64 chunk by chunk.
# * **One pass per noise seed**: train, validation and test spectra are read together in file order;
#   the training spectra fill one Gram per cell of SNR bin × physical bin (the SNR experts, the
#   physical experts and the global model are sums of cells), the validation spectra their own Grams.
# * **Routing**: the true SNR (definition `snr_bins.definition`, σ = error · noise_level) of the
#   noise-free spectrum, bins `snr_bins.edges` (right-closed); physical bins from the true T_eff
#   and [M/H]. Bins with fewer than `snr_bins.min_count` training spectra follow
#   `snr_bins.on_small_bin` (merge with a neighbour, or stop).
# * **α** of every model (global and each expert) is chosen from `ridge.alphas` on the validation
#   spectra of its own bins; test scores are on the held-out test split.
# * **Seeds**: every noise seed of the configuration is a full refit; scores are seed means, and
#   intervals resample test stars (the same stars in every seed, paired between models).

# %%
head = {nl: q1.run_headroom(ds, split, p, nl) for nl in noise_levels}
q1.run_overview(head)

# %% [markdown]
# Experts after the small-bin policy (training counts of the first seed; the SNR bins move with the
# noise level because σ does):

# %%
q1.plans_table(head)

# %% [markdown]
# ## Global vs oracle experts

# %%
scores = {nl: h.scores(n_boot=n_boot, seed=p.split.seed) for nl, h in head.items()}
summary = q1.scores_table(scores)
summary.round(4)

# %% [markdown]
# ## Per-bin R² (bins of the true SNR)

# %%
tables = {nl: h.per_bin("snr", n_boot=n_boot, seed=p.split.seed) for nl, h in head.items()}
tables[noise_levels[0]].round(4)

# %%
for nl, t in tables.items():
    fig = plots_q1.per_bin_bars(t, f"log g R² per true-SNR bin, noise_level {nl:g} ({len(p.seeds)} seeds)")
    run.save(fig, f"q1_per_bin_nl{nl:g}")

# %% [markdown]
# ## Predicted vs true log g, coloured by the true SNR (first seed, primary noise level)

# %%
h0 = head[noise_levels[0]]
preds0 = {k: v[0] for k, v in h0.predictions().items()}
fig = plots_q1.pred_vs_true(h0.y, preds0, h0.info["snr"].to_numpy(), f"true SNR ({p.snr_bins.definition})")
run.save(fig, "q1_pred_vs_true")

# %% [markdown]
# ## Where the headroom is: ΔR² by SNR bin and noise level

# %%
fig = plots_q1.delta_heatmap(list(tables.values()))
run.save(fig, "q1_delta_r2_heatmap")

# %%
deltas = summary[summary["model"] != "global"].rename(columns={"delta_lo": "lo", "delta_hi": "hi"})
fig = plots_q1.headroom_vs_noise(deltas, p.thresholds.gate2_delta_r2_min)
run.save(fig, "q1_headroom_vs_noise")

# %% [markdown]
# Chosen α per model (median over seeds; `at_edge` counts seeds whose α sits at an end of the grid):

# %%
alphas = q1.alpha_table(head)
q1.alpha_summary(alphas)

# %% [markdown]
# ## Verdict
#
# Gate-2 at every noise level (the physical oracle is shown for reference). The results are checked
# first: enough seeds, every test spectrum scored once, every expert trained on at least
# `snr_bins.min_count` spectra, the oracle equal to the routed expert's prediction.

# %%
res = q1.results(p, head, scores, summary, tables, alphas, n_test=len(split.test))
print_verdicts(res["verdicts"])
out = run.finish(**res)
print("results:", out.name)
