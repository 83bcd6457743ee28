import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from snrmoe_lib.evaluation.records import metric, read_results, verdict  # noqa: E402
from snrmoe_lib.reporting.session import start_run  # noqa: E402


def test_start_save_finish(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: c\ndata:\n  path: d.h5\n  mock:\n    n: 12\n    model: simple\n"
                   "split:\n  n_train: 6\n  n_val: 2\n  n_test: 4\n")
    run = start_run("nb", cfg, tmp_path / "out", progress=False)
    assert run.dataset.n == 12 and (tmp_path / "out").is_dir()
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    assert run.save(fig, "line") == "line.png" and (tmp_path / "out" / "line.png").exists()
    run.save(fig, "line")  # saving again does not list it twice
    path = run.finish({"m": metric(1.0)}, [verdict("G", "Q", "m", 1.0, ">=", 0.5)])
    rec = read_results(path)
    assert rec["figures"] == ["line.png"] and rec["verdicts"][0]["verdict"] == "PASS"
    assert "split" not in rec["dataset"]  # no split was used
    assert len(run.split.train) == 6
    rec = read_results(run.finish({}))
    assert rec["dataset"]["split"]["n_test"] == 4 and rec["dataset"]["fingerprint"]


def test_results_record_the_frozen_test(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: c\ndata:\n  path: d.h5\n  mock:\n    n: 12\n    model: simple\n"
                   "split:\n  n_train: 6\n  n_val: 2\n  n_test: 4\n  seed: 3\n")
    a = read_results(start_run("nb_a", cfg, tmp_path / "out", progress=False).finish({}))
    run_b = start_run("nb_b", cfg, tmp_path / "out", progress=False)
    b = read_results(run_b.finish({}))
    assert a["frozen_test"]["seed"] == 3 and a["frozen_test"]["n"] == 4
    assert a["frozen_test"] == b["frozen_test"]  # one configuration, one frozen test
    cfg.write_text(cfg.read_text().replace("seed: 3", "seed: 4"))
    c = read_results(start_run("nb_c", cfg, tmp_path / "out", progress=False).finish({}))
    assert c["frozen_test"]["fingerprint"] != a["frozen_test"]["fingerprint"]

    from snrmoe_lib.reporting.hub import build_hub

    build_hub(tmp_path)
    rows = [r for r in (tmp_path / "hub.md").read_text().splitlines() if "nb_" in r and "frozen" not in r]
    assert rows and all("2 different test sets" in r for r in rows)
    (tmp_path / "out" / "nb_c.json").unlink()
    build_hub(tmp_path)
    rows = [r for r in (tmp_path / "hub.md").read_text().splitlines() if "| nb_" in r or "[nb_" in r]
    assert rows and all("(shared)" in r for r in rows)


def test_save_all_keeps_the_order_and_display_precision_is_set(tmp_path):
    import pandas as pd

    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: c\ndata:\n  path: d.h5\n  mock:\n    n: 12\n    model: simple\n"
                   "split:\n  n_train: 6\n  n_val: 2\n  n_test: 4\n")
    before = pd.get_option("display.precision")
    try:
        run = start_run("nb", cfg, tmp_path / "out", progress=False, display_precision=2)
        assert pd.get_option("display.precision") == 2
    finally:
        pd.set_option("display.precision", before)
    figs = {name: plt.subplots()[0] for name in ("b", "a")}
    assert run.save_all(figs) == ["b.png", "a.png"] and run.save_all({}) == []
    assert read_results(run.finish({}))["figures"] == ["b.png", "a.png"]
