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
# # 00 · Data overview
#
# What the dataset of this configuration holds before any model sees it: the parameter
# distributions, example spectra, the error vectors across magnitudes, and the per-spectrum SNR
# (L2 and per-pixel) with the SNR bin edges the Hub's questions use. By default this is the embedded
# **mock** PFS-MR simulator (a physically motivated stand-in with the pfsspec layout, not BOSZ);
# point `data.path` of a configuration at real pfsspec files and the same notebook reads them.

# %% tags=["parameters"]
params_path = "../params/smoke.yaml"
output_dir = "../reports/interactive"

# %%
from pathlib import Path

import numpy as np

from snrmoe_lib import ensure_dataset, load_params, metric, verdict, write_results
from snrmoe_lib import overview
from snrmoe_lib.io import dataset_record
from snrmoe_lib.plots import save_figure

p = load_params(params_path)
Path(output_dir).mkdir(parents=True, exist_ok=True)
ds = ensure_dataset(p)
figures = []
ds

# %% [markdown]
# ## Parameters
# Stellar parameters and HSC-i magnitude of every spectrum in the dataset.

# %%
fig = overview.plot_parameter_distributions(ds.params)
figures.append(save_figure(fig, output_dir, "00_parameters"))

# %% [markdown]
# ## SNR per spectrum
# Both definitions are computed from the effective σ = error · noise_level. L2: ‖flux‖ / ‖σ‖;
# per-pixel: median(flux / σ). The bin edges of this configuration refer to one of them (named in the
# panel title).

# %%
table = overview.snr_table(ds, np.arange(ds.n), p.noise.noise_level, chunk_size=p.data.chunk_size)
fig = overview.plot_snr_distributions(table, p.snr_bins.edges, p.snr_bins.definition)
figures.append(save_figure(fig, output_dir, "00_snr_distributions"))
fractions = overview.bin_fractions(table[f"snr_{p.snr_bins.definition}"], p.snr_bins.edges, p.snr_bins.labels)
fractions

# %% [markdown]
# ## Example spectra and error vectors

# %%
examples = table.sort_values("log_g")["row"].to_numpy()[np.linspace(0, ds.n - 1, 3).astype(int)]
fig = overview.plot_example_spectra(ds, examples, p.noise.noise_level, seed=p.seeds[0])
figures.append(save_figure(fig, output_dir, "00_example_spectra"))

# %%
fig = overview.plot_error_vectors(ds, table, p.noise.noise_level)
figures.append(save_figure(fig, output_dir, "00_error_vectors"))

# %% [markdown]
# ## Summary
# Invariants checked here: every spectrum has finite, positive SNR, and every configured bin is
# reported with its count (an empty bin is shown, not hidden).

# %%
medians = {"snr_l2_median": metric(np.median(table["snr_l2"])),
           "snr_pixel_median": metric(np.median(table["snr_pixel"]))}
if "snr" in table:
    medians["snr_column_median"] = metric(np.median(table["snr"]))
assert np.all(np.isfinite(table[["snr_l2", "snr_pixel"]].to_numpy())) and (table["snr_l2"] > 0).all()
assert fractions["n"].sum() == ds.n
out = write_results(output_dir, "00_data_overview", p, dataset=dataset_record(ds), metrics=medians,
                    figures=figures, extra={"bin_fractions": fractions.to_dict(orient="records")})
print({k: round(v["value"], 3) for k, v in medians.items()})
print("results:", out.name)
