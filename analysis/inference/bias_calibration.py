"""What the bias-averaged ensemble's numbers are worth on the flagship design (measured, SIMULATED).

Copied from ``reports/selection_power.json`` (``python -m analysis.studies.selection_power``:
300 simulated datasets of the flagship design, Tb.N with outcome-reporting selection, the six
other outcomes without); ``tests/test_bias_calibration.py`` keeps them equal to the file. The
report uses them to say whether the bias inclusion Bayes factor is a calibrated flag and how far
the model-averaged mu is from the truth without selection ("no calibration, no headline").
"""

from __future__ import annotations

__all__ = ["BIAS_BF_THRESHOLD", "MAX_FALSE_ALARM", "MEASURED", "bias_flag_calibrated", "calibration_text"]

#: The bias inclusion Bayes factor "flags" above this value ...
BIAS_BF_THRESHOLD = 3.0
#: ... and is a calibrated flag only if it does so in at most this share of datasets without selection.
MAX_FALSE_ALARM = 0.10

#: Measured quantity -> (value, Monte Carlo SE), from reports/selection_power.json ``done_when``.
MEASURED: dict[str, tuple[float, float]] = {
    "bf_bias_false_alarm": (0.2544, 0.0103),
    "averaged_mean_error_unselected": (-0.5824, 0.0085),
    "averaged_coverage_unselected": (0.9067, 0.0080),
}


def bias_flag_calibrated() -> bool:
    """Whether ``BF_bias > 3`` kept its false-alarm rate within :data:`MAX_FALSE_ALARM` (2 MCSE allowed)."""
    rate, mcse = MEASURED["bf_bias_false_alarm"]
    return bool(rate - 2.0 * mcse <= MAX_FALSE_ALARM)


def calibration_text() -> str:
    """One sentence of the measured behaviour, for the report."""
    rate, _ = MEASURED["bf_bias_false_alarm"]
    err, err_se = MEASURED["averaged_mean_error_unselected"]
    cov, _ = MEASURED["averaged_coverage_unselected"]
    return (
        f"on 300 simulated flagship datasets, BF_bias > {BIAS_BF_THRESHOLD:g} in {rate:.0%} of outcomes without "
        f"selection, and there the model-averaged μ was off by {err:+.2f} (MCSE {err_se:.2f}) with 95% interval "
        f"coverage {cov:.0%}"
    )
