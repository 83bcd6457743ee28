import json

import numpy as np
import pytest

from snrmoe_lib.config import params_from_dict
from snrmoe_lib.evaluation.records import ResultsError, decide, find_results, metric, read_results, verdict, write_results


def test_decide():
    assert decide(0.05, ">=", 0.02) == "PASS"
    assert decide(0.01, ">=", 0.02) == "FAIL"
    assert decide(0.049, "<", 0.05) == "PASS"
    assert decide(float("nan"), "<", 0.05) == "UNDEFINED"
    assert decide(None, "<", 0.05) == "UNDEFINED"
    with pytest.raises(ValueError):
        decide(1, "=>", 0)


def test_write_read_find(tmp_path):
    p = params_from_dict({"name": "cfgA"})
    path = write_results(tmp_path / "cfgA", "nb1", p, dataset={"path": "x", "fingerprint": "f"},
                         metrics={"r2": metric(np.float32(0.5), (np.float64(0.4), 0.6)), "nan": metric(float("nan"))},
                         verdicts=[verdict("Gate-2", "Q1", "delta_r2", np.float64(0.03), ">=", 0.02)],
                         extra={"table": np.arange(3)})
    rec = read_results(path)
    assert rec["metrics"]["r2"]["value"] == pytest.approx(0.5)
    assert rec["metrics"]["nan"]["value"] is None
    assert rec["verdicts"][0]["verdict"] == "PASS"
    assert rec["extra"]["table"] == [0, 1, 2]
    assert rec["params"]["name"] == "cfgA"
    assert [r["notebook"] for r in find_results(tmp_path, config="cfgA")] == ["nb1"]
    assert find_results(tmp_path, notebook="other") == []


def test_a_typed_in_verdict_is_refused(tmp_path):
    p = params_from_dict({})
    v = verdict("Gate-1", "Q2", "r2", 0.9, "<", 0.05)
    v["verdict"] = "PASS"
    with pytest.raises(ResultsError, match="numbers give FAIL"):
        write_results(tmp_path, "nb", p, dataset={}, metrics={}, verdicts=[v])


def test_read_rejects_bad_files(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(ResultsError, match="not valid JSON"):
        read_results(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"schema": 1}))
    with pytest.raises(ResultsError, match="missing"):
        read_results(tmp_path / "b.json")
