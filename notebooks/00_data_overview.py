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
import numpy as np

from snrmoe_lib import print_verdicts
from snrmoe_lib.analyses import calibration, overview
from snrmoe_lib.data.mock import get_model
from snrmoe_lib.reporting.plots import overview as plots
from snrmoe_lib.reporting.session import start_run

run = start_run("00_data_overview", params_path, output_dir)
p, ds = run.params, run.dataset
ds

# %% [markdown]
# ## Parameters
# Stellar parameters and HSC-i magnitude of every spectrum in the dataset.

# %%
fig = plots.plot_parameter_distributions(ds.params)
run.save(fig, "00_parameters")

# %% [markdown]
# ## SNR per spectrum
# Both definitions are computed from the effective σ = error · noise_level. L2: ‖flux‖ / ‖σ‖;
# per-pixel: median(flux / σ). The bin edges of this configuration refer to one of them (named in the
# panel title).

# %%
table = overview.snr_table(ds, np.arange(ds.n), p.noise.noise_level, chunk_size=p.data.chunk_size)
fig = plots.plot_snr_distributions(table, p.snr_bins.edges, p.snr_bins.definition)
run.save(fig, "00_snr_distributions")
fractions = overview.bin_fractions(table[f"snr_{p.snr_bins.definition}"], p.snr_bins.edges, p.snr_bins.labels)
fractions

# %% [markdown]
# ## Example spectra and error vectors

# %%
fig = plots.plot_example_spectra(ds, overview.example_rows(table, 3), p.noise.noise_level, seed=p.seeds[0])
run.save(fig, "00_example_spectra")

# %%
fig = plots.plot_error_vectors(ds, table, p.noise.noise_level)
run.save(fig, "00_error_vectors")

# %% [markdown]
# ## Mock calibration
# The embedded default data come from the **mock** PFS-MR simulator (`snrmoe_lib.data.mock`, model
# "calibrated"): a physically motivated stand-in with the pfsspec layout and noise protocol — **not
# BOSZ/ATLAS9 and not the PFS simulator**. Its realism is the evidence every gate rests on, so here it
# is compared with the statistics of the user's real products (BRIEF §3), each row with its
# tolerance and a computed verdict. Tier 1 must hold; tier 2 is reported. Samples are small under
# `smoke` (noisy numbers, a smoke test) and larger under `default`.
#
# First, what the gravity signal looks like: noise-free mock spectra across log g at fixed T_eff and
# [M/H]. The Ca II triplet wings strengthen toward low gravity; Na I and Mg I toward high gravity.

# %%
mock_model = get_model(p.data.mock.model) if p.data.mock is not None else None
if mock_model is not None:
    run.save(plots.plot_logg_sequence(mock_model), "00_mock_logg_sequence")

# %% [markdown]
# The calibration table: per-pixel SNR of the real grid's fixed conditions, L2 and `snr`-column SNR
# of this dataset at noise_level 1 (median, max and the share of spectra in the real set's SNR bins
# X ≤ 2 < L ≤ 4 < M ≤ 7 < H, over every spectrum), how alike the scale-free error vectors are and in
# how many pixels they differ by more than 5 % (report only), and the information
# content: R²_max per magnitude from the one computation the Fisher notebook also reports
# (`analyses.k1_ceiling.lattice_ceiling`: `fisher.n_stars` nodes of the real grid's lattice, autograd
# Jacobians, marginal over T_eff and [M/H], and over all four nuisances for tier 2).

# %%
calib, calib_stats = calibration.mock_calibration(p, ds, mock_model, output_dir) if mock_model is not None else (None, None)
if calib is not None:
    print(f"tier 1: {'all PASS' if calibration.tier1_passed(calib) else 'NOT all PASS'} "
          f"({calib_stats['n_random']} random-set spectra, {calib_stats['n_grid']} lattice stars, "
          f"R²_max in {calib_stats['seconds']:.1f} s)")
    display(calib.drop(columns=["deviation", "op", "limit"]).round(3))
    run.save(plots.plot_snr_calibration(calib_stats["snr_by_mag"]), "00_mock_snr_calibration")

# %% [markdown]
# Where the scale-free error vectors differ most, by wavelength: after removing each star's scale and
# the global template, the residual concentrates on the strong stellar lines (the object's photon
# noise carries the spectrum — the leakage Q2 audits) and on the OH sky lines and telluric bands.

# %%
if calib is not None:
    run.save(plots.plot_error_differences(ds.wave, calib_stats["similarity"]), "00_mock_error_differences")

# %% [markdown]
# ## Where log g's information lives
# The Fisher matrix is a sum over pixels, so it splits exactly over the windows of the gravity
# mechanisms of this wavelength range (`ceiling.decomposition`): the Ca II triplet's pressure
# wings, Na I 8183/8195, Mg I 8807, K I, the Paschen Stark wings, the ionised lines (ionisation
# balance), O I, the neutral metal lines, the TiO and CN bands, and the continuum between them.
# Per spectral type (median over the lattice stars at i = 21.5): `share` is the window's part of the
# unmarginalised F_gg; `survives_3d` / `survives_5d` how much of the window's own log g information
# survives marginalising (T_eff, [M/H]) or all four nuisances with that window alone;
# `needed_3d` / `needed_5d` the share of the total marginal information lost without the window.

# %%
if mock_model is not None:
    info_table, info_summary = calibration.information_by_feature(p, mock_model)
    top = info_summary[info_summary["share"] >= 0.01]
    display(top.round(3))

# %% [markdown]
# ## Summary
# Checked here: every spectrum has finite, positive SNR, and every configured bin is reported with
# its count (an empty bin is shown, not hidden); on the mock, every calibration row has a number.

# %%
metrics, verdicts, extra = overview.overview_results(
    table, fractions, ds.n, calibration.calibration_results(calib) if calib is not None else None)
print_verdicts(verdicts, mock=p.data.mock is not None)
out = run.finish(metrics=metrics, verdicts=verdicts, extra=extra)
print("results:", out.name)
