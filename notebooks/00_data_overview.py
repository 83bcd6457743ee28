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

from snrmoe_lib import metric, verdict
from snrmoe_lib.analyses import overview
from snrmoe_lib.reporting.session import start_run

run = start_run("00_data_overview", params_path, output_dir)
p, ds = run.params, run.dataset
ds

# %% [markdown]
# ## Parameters
# Stellar parameters and HSC-i magnitude of every spectrum in the dataset.

# %%
fig = overview.plot_parameter_distributions(ds.params)
run.save(fig, "00_parameters")

# %% [markdown]
# ## SNR per spectrum
# Both definitions are computed from the effective σ = error · noise_level. L2: ‖flux‖ / ‖σ‖;
# per-pixel: median(flux / σ). The bin edges of this configuration refer to one of them (named in the
# panel title).

# %%
table = overview.snr_table(ds, np.arange(ds.n), p.noise.noise_level, chunk_size=p.data.chunk_size)
fig = overview.plot_snr_distributions(table, p.snr_bins.edges, p.snr_bins.definition)
run.save(fig, "00_snr_distributions")
fractions = overview.bin_fractions(table[f"snr_{p.snr_bins.definition}"], p.snr_bins.edges, p.snr_bins.labels)
fractions

# %% [markdown]
# ## Example spectra and error vectors

# %%
examples = table.sort_values("log_g")["row"].to_numpy()[np.linspace(0, ds.n - 1, 3).astype(int)]
fig = overview.plot_example_spectra(ds, examples, p.noise.noise_level, seed=p.seeds[0])
run.save(fig, "00_example_spectra")

# %%
fig = overview.plot_error_vectors(ds, table, p.noise.noise_level)
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
from snrmoe_lib.data.mock import calibration as mock_calibration
from snrmoe_lib.data.mock import figures as mock_figures
from snrmoe_lib.data.mock import get_model

mock_model = get_model(p.data.mock.model) if p.data.mock is not None else None
if mock_model is not None:
    fig = mock_figures.plot_logg_sequence(mock_model)
    run.save(fig, "00_mock_logg_sequence")

# %% [markdown]
# The calibration table: per-pixel SNR of the real grid's fixed conditions, L2 and `snr`-column SNR
# of this dataset at noise_level 1, how alike the scale-free error vectors are, and the information
# content (σ_CRLB of log g from autograd Jacobians, marginal over T_eff and [M/H], and over all four
# nuisances for tier 2).

# %%
calib_verdicts, calib_metrics, calib_extra = [], {}, {}
if mock_model is not None:
    sample = ds.read(np.arange(min(ds.n, 20 * p.fisher.n_stars)))
    calib, calib_stats = mock_calibration.calibration_table(
        mock_model, sample.flux, sample.error, sample.params["snr"].to_numpy(), n_grid=p.fisher.n_stars,
        seed=p.seeds[0], noise_level=1.0)
    calib_verdicts = [verdict(f"Mock-T{r.tier}", "calibration", r.quantity, r.deviation, r.op, r.limit,
                              note=f"mock {r.mock:.3g} vs real {r.real:.3g} ({r.tolerance})") for r in calib.itertuples()]
    calib_metrics = {"mock_tier1_passed": metric(float(mock_calibration.tier1_passed(calib)))}
    calib_extra = {"mock_calibration": calib.to_dict(orient="records")}
    print(f"tier 1: {'all PASS' if mock_calibration.tier1_passed(calib) else 'NOT all PASS'} "
          f"({len(sample.flux)} random-set spectra, {p.fisher.n_stars} grid stars)")
    display(calib.drop(columns=["deviation", "op", "limit"]).round(3))

# %%
if mock_model is not None:
    fig = mock_figures.plot_snr_calibration(calib_stats["snr_by_mag"])
    run.save(fig, "00_mock_snr_calibration")

# %% [markdown]
# Where the scale-free error vectors differ most, by wavelength: after removing each star's scale and
# the global template, the residual concentrates on the strong stellar lines (the object's photon
# noise carries the spectrum — the leakage Q2 audits) and on the OH sky lines and telluric bands.

# %%
if mock_model is not None:
    fig = mock_figures.plot_error_differences(ds.wave, calib_stats["similarity"])
    run.save(fig, "00_mock_error_differences")
    assert np.isfinite(calib["mock"]).all() and len(calib) == len(mock_calibration.REAL)

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
out = run.finish(metrics={**medians, **calib_metrics},
                    verdicts=calib_verdicts, extra={"bin_fractions": fractions.to_dict(orient="records"), **calib_extra})
print({k: round(v["value"], 3) for k, v in medians.items()})
print("results:", out.name)
