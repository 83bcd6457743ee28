"""The small helpers the notebooks call: text lines, table views, and what they do without a forward model."""
import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from snrmoe_lib.analyses import k1, k1_ceiling, k1_map, q1  # noqa: E402
from snrmoe_lib.reporting.plots import k1 as plots_k1, q3 as plots_q3  # noqa: E402


def test_q1_lines_and_delta_rows():
    assert q1.describe_share({"control": "blend_fixed", "value": 0.01234, "interval": [0.001, 0.02]}) == \
        "routing share = oracle − blend_fixed = 0.0123 [0.001, 0.02]"
    assert q1.describe_low_share({"bins": ["X", "L"], "value": 0.5, "interval": [0.25, 0.75]}) == \
        "share from ['X', 'L']: 0.500 [0.25, 0.75]"
    summary = pd.DataFrame({"model": ["global", "snr_oracle"], "delta_lo": [np.nan, 0.1], "delta_hi": [np.nan, 0.3]})
    rows = q1.delta_rows(summary)
    assert rows["model"].tolist() == ["snr_oracle"] and rows[["lo", "hi"]].iloc[0].tolist() == [0.1, 0.3]


def test_k1_helpers_without_a_forward_model():
    checks = k1_ceiling.derivative_checks(None, None, None)
    assert checks == {"convergence": None, "schur": None, "scaling": None}
    assert k1_ceiling.check_tables(checks) == [] and plots_k1.check_figures(checks) == {}
    assert k1_map.map_summary(None, None, None, None) == (None, None, 0.0)
    assert plots_k1.map_figures(None, ["X"]) == {} and plots_k1.bin_bounds_figures(pd.DataFrame(), pd.DataFrame()) == {}
    assert "mock only" in k1.bounds_view(pd.DataFrame())


def test_k1_bounds_view_keeps_the_r2_columns():
    b = pd.DataFrame({"bin": ["X"], "tag": ["5d"], "n_stars": [3], "n_test": [9], "var_bin": [1.0],
                      "vantrees_r2": [0.5], "vantrees_r2_lo": [0.4], "vantrees_r2_hi": [0.6], "vantrees_mse": [0.5]})
    assert list(k1.bounds_view(b)) == ["bin", "tag", "n_stars", "n_test", "var_bin", "vantrees_r2", "vantrees_r2_lo",
                                       "vantrees_r2_hi"]


def test_q3_gate_figures_are_named():
    cm = pd.DataFrame([[5, 1], [2, 4]], index=["L", "H"], columns=["L", "H"])
    figs = plots_q3.gate_figures({"confusion": cm, "max_proba": {"logistic": np.linspace(0.5, 1, 20),
                                                                  "mlp": np.linspace(0.4, 1, 20)}}, "logistic", 0.6, 3)
    assert list(figs) == ["q3_confusion", "q3_gate_confidence"]
    assert "3 seeds" in figs["q3_confusion"].axes[0].get_title()
