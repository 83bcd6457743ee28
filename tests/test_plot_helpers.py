"""The shared figure helpers."""
import numpy as np

from snrmoe_lib.reporting.plots.common import interval_extent


def test_interval_extent_is_never_negative_and_keeps_the_far_end():
    # a percentile interval may lie entirely above its point value: no bar below, the far end kept
    e = interval_extent([0.5, 0.2, np.nan], [0.4, 0.3, 0.1], [0.6, 0.5, 0.2])
    assert e.shape == (2, 3)
    assert np.allclose(e, [[0.1, 0.0, 0.0], [0.1, 0.3, 0.0]])


def test_interval_extent_of_scalars_is_a_2x1_column_for_errorbar():
    assert interval_extent(1.0, 0.5, 2.0).tolist() == [[0.5], [1.0]]


def _curve_points():
    from snrmoe_lib.analyses.q3_report import curve_points

    pt = lambda v, lo, hi: {"value": v, "interval": [lo, hi]}  # noqa: E731
    curve = [{"n_train": n, "rho_vs_best_oracle": pt(r, r - 0.1, r + 0.05),
              "deployed_minus_control_r2": pt(d, d - 0.01, d + 0.02)}
             for n, r, d in ((1000, 0.6, 0.03), (10_000, 0.8, 0.01), (100_000, 0.9, -0.005))]
    return curve_points(curve)


def test_learning_curve_panels_give_each_gate_its_axis_threshold_and_intervals():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from snrmoe_lib.analyses.q3_report import curve_style
    from snrmoe_lib.config import Thresholds
    from snrmoe_lib.reporting.plots.q1 import learning_curve

    pts = _curve_points()
    th = Thresholds(gate3_rho_min=0.7, gate4_margin=0.01)
    style = curve_style(th)
    assert set(style["threshold"]) == set(pts["series"])  # every plotted series has its gate's threshold
    fig = learning_curve(pts, panels=True, **style)
    axes = fig.axes
    assert len(axes) == 2
    for ax, series, limit in zip(axes, pts["series"].unique(), (0.7, 0.01)):
        assert ax.get_xscale() == "log"
        assert ax.get_ylabel() == style["ylabel"][series]
        flat = [ln for ln in ax.get_lines() if len(set(ln.get_ydata())) == 1]
        assert any(ln.get_ydata()[0] == limit for ln in flat), f"{series}: no threshold line at {limit}"
        bars = [c for c in ax.collections if len(c.get_segments()) == 3]  # one error bar per training size
        lo_hi = sorted(tuple(sorted(s[:, 1])) for s in bars[0].get_segments())
        expected = pts[pts["series"] == series].sort_values("lo")
        assert np.allclose([a for a, _ in lo_hi], expected["lo"]) and np.allclose([b for _, b in lo_hi], expected["hi"])
    plt.close(fig)
    one = learning_curve(pts, 0.02)  # the default: every series on one axis, one shared threshold
    assert len(one.axes) == 1 and one.axes[0].get_xscale() == "log"
    plt.close(one)


def test_q4_curve_of_one_size_sets_the_models_side_by_side_per_family():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from snrmoe_lib.reporting.plots.q4 import plot_learning_curve

    rows = [(f, m, 12000, r2, r2 - 0.01, r2 + 0.02) for f, base in (("ridge", 0.40), ("boosted", 0.48))
            for m, r2 in (("global", base), ("deployed", base + 0.01))]
    one = pd.DataFrame(rows, columns=["family", "model", "n_train", "r2", "lo", "hi"])
    fig = plot_learning_curve(one)
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear" and "q4.curve_sizes is empty" in ax.get_title()
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["ridge", "boosted"]
    ys = sorted(y for c in ax.containers for y in c.lines[0].get_ydata())  # each errorbar's data points
    assert np.allclose(ys, sorted(one["r2"]))  # every model's point, where its number says
    plt.close(fig)
    two = pd.concat([one, one.assign(n_train=3000, r2=one["r2"] - 0.05, lo=one["lo"] - 0.05, hi=one["hi"] - 0.05)])
    fig = plot_learning_curve(two)
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_title() == "Learning curve per family"
    plt.close(fig)
