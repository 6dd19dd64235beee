"""The bias ensemble's measured behaviour used by the report equals the committed study output."""

from __future__ import annotations

import json

import pytest

from analysis.config import REPORTS_DIR
from analysis.inference.bias_calibration import MAX_FALSE_ALARM, MEASURED, bias_flag_calibrated


def test_measured_numbers_are_those_of_reports_selection_power():
    done = json.loads((REPORTS_DIR / "selection_power.json").read_text())["done_when"]
    false_alarm, unselected = done["c_bias_false_alarm"], done["a_unselected_averaged"]
    assert MEASURED["bf_bias_false_alarm"] == pytest.approx((false_alarm["rate"], false_alarm["mcse"]), abs=5e-4)
    assert MEASURED["averaged_mean_error_unselected"] == pytest.approx(
        (unselected["mean_error"], unselected["mean_error_mcse"]), abs=5e-4
    )
    assert MEASURED["averaged_coverage_unselected"] == pytest.approx(
        (unselected["coverage"], unselected["coverage_mcse"]), abs=5e-4
    )


def test_flag_rule_follows_the_false_alarm_rate(monkeypatch):
    import analysis.inference.bias_calibration as bc

    monkeypatch.setitem(bc.MEASURED, "bf_bias_false_alarm", (MAX_FALSE_ALARM + 0.10, 0.02))
    assert not bc.bias_flag_calibrated()
    monkeypatch.setitem(bc.MEASURED, "bf_bias_false_alarm", (MAX_FALSE_ALARM + 0.01, 0.01))
    assert bc.bias_flag_calibrated()
    assert isinstance(bias_flag_calibrated(), bool)
