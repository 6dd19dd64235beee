"""The outcome-reporting-bias flag's measured behaviour used by the report equals the committed study output."""

from __future__ import annotations

import json

import pytest

from analysis.config import REPORTS_DIR
from analysis.inference import reporting_bias_calibration as rbc


def test_measured_numbers_are_those_of_reports_reporting_bias_power():
    study = json.loads((REPORTS_DIR / "reporting_bias_power.json").read_text())
    conditions = study["conditions"]
    null = conditions["ignorable"]["structures"]["selected"]["pooled_outcomes"]
    orb = conditions["orb"]["structures"]["selected"]["pooled_outcomes"]
    assert rbc.MEASURED["false_alarm"] == pytest.approx((null["rate"], null["mcse"]), abs=5e-4)
    assert rbc.MEASURED["power"] == pytest.approx((orb["rate"], orb["mcse"]), abs=5e-4)
    assert rbc.N_DATASETS == conditions["ignorable"]["n_replications"] == conditions["orb"]["n_replications"]
    assert rbc.N_OUTCOMES == {"false_alarm": null["n"], "power": orb["n"]}
    assert study["complete"]


def test_flag_rule_follows_the_false_alarm_rate(monkeypatch):
    monkeypatch.setitem(rbc.MEASURED, "false_alarm", (rbc.MAX_FALSE_ALARM + 0.10, 0.02))
    assert not rbc.reporting_bias_flag_calibrated()
    assert "not a calibrated flag" in rbc.reporting_bias_calibration_text()
    monkeypatch.setitem(rbc.MEASURED, "false_alarm", (rbc.MAX_FALSE_ALARM + 0.01, 0.01))
    assert rbc.reporting_bias_flag_calibrated()
    monkeypatch.delitem(rbc.MEASURED, "false_alarm")
    assert not rbc.reporting_bias_flag_calibrated()
