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
import pandas as pd

from snrmoe_lib import print_verdicts, verdict
from snrmoe_lib.models import experts
from snrmoe_lib.reporting.plots import q1 as plots_experts
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
head = {nl: experts.run_headroom(ds, split, p, nl) for nl in noise_levels}
pd.DataFrame([{"noise_level": nl, "seeds": h.seeds, "features": h.runs[0].models.coef.shape[1],
               "seconds": round(h.seconds, 1)} for nl, h in head.items()])

# %% [markdown]
# Experts after the small-bin policy (training counts of the first seed; the SNR bins move with the
# noise level because σ does):

# %%
pd.DataFrame([{"noise_level": nl, "family": f, **e} for nl, h in head.items() for f, plan in h.plans().items()
              for e in plan])

# %% [markdown]
# ## Global vs oracle experts

# %%
scores = {nl: h.scores(n_boot=n_boot, seed=p.split.seed) for nl, h in head.items()}
summary = experts.scores_table(scores)
summary.round(4)

# %% [markdown]
# ## Per-bin R² (bins of the true SNR)

# %%
tables = {nl: h.per_bin("snr", n_boot=n_boot, seed=p.split.seed) for nl, h in head.items()}
tables[noise_levels[0]].round(4)

# %%
for nl, t in tables.items():
    fig = plots_experts.per_bin_bars(t, f"log g R² per true-SNR bin, noise_level {nl:g} ({len(p.seeds)} seeds)")
    run.save(fig, f"q1_per_bin_nl{nl:g}")

# %% [markdown]
# ## Predicted vs true log g, coloured by the true SNR (first seed, primary noise level)

# %%
h0 = head[noise_levels[0]]
preds0 = {k: v[0] for k, v in h0.predictions().items()}
fig = plots_experts.pred_vs_true(h0.y, preds0, h0.info["snr"].to_numpy(), f"true SNR ({p.snr_bins.definition})")
run.save(fig, "q1_pred_vs_true")

# %% [markdown]
# ## Where the headroom is: ΔR² by SNR bin and noise level

# %%
fig = plots_experts.delta_heatmap(list(tables.values()))
run.save(fig, "q1_delta_r2_heatmap")

# %%
deltas = summary[summary["model"] != "global"].rename(columns={"delta_lo": "lo", "delta_hi": "hi"})
fig = plots_experts.headroom_vs_noise(deltas, p.thresholds.gate2_delta_r2_min)
run.save(fig, "q1_headroom_vs_noise")

# %% [markdown]
# Chosen α per model (median over seeds; `at_edge` counts seeds whose α sits at an end of the grid):

# %%
alphas = pd.concat([h.alphas() for h in head.values()])
alphas.groupby(["noise_level", "model"], sort=False).agg(
    alpha=("alpha", "median"), at_edge=("at_grid_edge", "sum"), n_train=("n_train", "median")).reset_index()

# %% [markdown]
# ## Verdict

# %%
thr = p.thresholds.gate2_delta_r2_min
verdicts = []
for nl, s in scores.items():
    tag = "" if nl == noise_levels[0] else f" (noise_level {nl:g})"
    d = s["delta_r2_snr"]
    verdicts.append(verdict(f"Gate-2{tag}", "Q1", "delta_r2_snr", d["value"], ">=", thr, d["interval"],
                            note=f"mean over seeds {h0.seeds}; per seed {[round(x, 4) for x in d['per_seed']]}"))
    d = s["delta_r2_phys"]
    verdicts.append(verdict(f"Q1 physical oracle{tag}", "Q1", "delta_r2_phys", d["value"], ">=", thr, d["interval"],
                            note="reference: 3 × 3 T_eff × [M/H] oracle experts"))
print_verdicts(verdicts)

# invariants: enough seeds for a verdict; every test spectrum scored in exactly one bin; every
# expert trained on at least min_count spectra; oracle = the routed expert's own prediction
assert len(p.seeds) >= 3, "Gate-2 needs at least 3 noise seeds"
for nl, h in head.items():
    assert tables[nl].groupby("model")["n"].sum().eq(len(split.test)).all()
    for r in h.runs:
        assert all(r.models.n_train[c] >= max(p.snr_bins.min_count, 1) for f in r.families.values() for c in f.columns)
        e = r.families["snr"].plan.route(r.test_info["snr_bin"].to_numpy())
        assert (r.oracle_prediction("snr") == r.expert_predictions("snr")[range(len(e)), e]).all()
assert summary[["r2", "mae", "rmse"]].notna().all().all()

out = run.finish(metrics=experts.headroom_metrics(scores, noise_levels[0]), verdicts=verdicts,
    extra={"summary": summary.to_dict(orient="records"),
           "per_bin": pd.concat(tables.values()).to_dict(orient="records"),
           "alphas": alphas.to_dict(orient="records"),
           "plans": {str(nl): h.plans() for nl, h in head.items()},
           "seconds": {str(nl): h.seconds for nl, h in head.items()},
           "features": {"kind": "noisy flux", "bin_pixels": p.ridge.bin_pixels}})
print("results:", out.name)
