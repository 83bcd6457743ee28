import json

import numpy as np
import pytest

from snrmoe_lib.config import params_from_dict
from snrmoe_lib.evaluation.records import (VERDICT_STATES, ResultsError, decide, decision_basis, find_results, metric,
                                           read_results, verdict, verdict_frame, write_results)


def test_decide_on_point_values():
    assert decide(0.05, ">=", 0.02) == "PASS"
    assert decide(0.01, ">=", 0.02) == "FAIL"
    assert decide(0.049, "<", 0.05) == "PASS"
    assert decide(float("nan"), "<", 0.05) == "INCONCLUSIVE"
    assert decide(None, "<", 0.05) == "INCONCLUSIVE"
    with pytest.raises(ValueError):
        decide(1, "=>", 0)


@pytest.mark.parametrize("op, interval, expect", [
    # a lower limit (ΔR² ≥ 0.02): the whole interval must clear it to PASS
    (">=", (0.021, 0.05), "PASS"), (">=", (0.02, 0.05), "PASS"), (">=", (0.01, 0.05), "INCONCLUSIVE"),
    (">=", (0.0, 0.019), "FAIL"), (">", (0.02, 0.05), "INCONCLUSIVE"),
    # an upper limit (log g R² < 0.02)
    ("<", (0.0, 0.019), "PASS"), ("<", (0.0, 0.02), "INCONCLUSIVE"), ("<", (0.02, 0.05), "FAIL"),
    ("<=", (0.0, 0.02), "PASS"), ("<=", (0.021, 0.05), "FAIL"),
])
def test_decide_from_the_whole_interval(op, interval, expect):
    # the point value sits inside every interval; only the interval decides
    value = 0.5 * (interval[0] + interval[1])
    assert decide(value, op, 0.02, interval) == expect


def test_an_interval_overrules_a_passing_point_value():
    # the point value clears the threshold, the interval straddles it: not a PASS
    assert decide(0.025, ">=", 0.02) == "PASS"
    assert decide(0.025, ">=", 0.02, (0.015, 0.035)) == "INCONCLUSIVE"
    # an interval with a missing end is no interval: the point value decides, and the record says so
    v = verdict("G", "Q", "m", 0.025, ">=", 0.02, (float("nan"), 0.03))
    assert v["verdict"] == "PASS" and v["basis"] == "point"
    assert decision_basis(None, (0.0, 1.0)) == "none"


def test_every_verdict_shows_what_decided_it():
    vs = [verdict("A", "Q", "m", 0.03, ">=", 0.02, (0.01, 0.05)), verdict("B", "Q", "m", 0.03, ">=", 0.02),
          verdict("C", "Q", "m", None, ">=", 0.02)]
    assert [v["verdict"] for v in vs] == ["INCONCLUSIVE", "PASS", "INCONCLUSIVE"]
    assert set(v["verdict"] for v in vs) <= set(VERDICT_STATES)
    f = verdict_frame(vs)
    assert f["decided on"].tolist() == ["95 % interval", "point value (no interval)", "no value"]


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
    # a point PASS typed over an interval that straddles the threshold is refused too
    v = verdict("Gate-2", "Q1", "d", 0.03, ">=", 0.02, (0.01, 0.05))
    v["verdict"] = "PASS"
    with pytest.raises(ResultsError, match="numbers give INCONCLUSIVE"):
        write_results(tmp_path, "nb", p, dataset={}, metrics={}, verdicts=[v])


def test_read_rejects_bad_files(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(ResultsError, match="not valid JSON"):
        read_results(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"schema": 1}))
    with pytest.raises(ResultsError, match="missing"):
        read_results(tmp_path / "b.json")


def test_verdict_table_on_mock_data_carries_the_provisional_caveat(capsys):
    from snrmoe_lib.evaluation.records import MOCK_CAVEAT, print_verdicts

    v = [verdict("Gate-2", "Q1", "routing_share_delta_r2", 0.03, ">=", 0.02, interval=[0.025, 0.035])]
    print_verdicts(v, mock=True)
    out = capsys.readouterr().out
    assert out.splitlines()[0] == MOCK_CAVEAT and "PASS" in out
    print_verdicts(v)
    assert MOCK_CAVEAT not in capsys.readouterr().out
