"""What the outcome-reporting-bias flag is worth on the flagship design (measured, SIMULATED).

Copied from ``reports/reporting_bias_power.json`` (``python -m analysis.studies.reporting_bias_power``:
simulated datasets of the flagship design, four microarchitecture outcomes, missingness either
the flagship's own pattern (ignorable) or non-significant outcomes left unreported; the production
path: three structures, the PSIS-LOO best kept); ``tests/test_reporting_bias_calibration.py``
keeps them equal to the file. The report uses them to say whether ``z <= -1.96`` is a calibrated
flag ("no calibration, no headline").
"""

from __future__ import annotations

__all__ = ["MAX_FALSE_ALARM", "MEASURED", "reporting_bias_calibration_text", "reporting_bias_flag_calibrated"]

#: The flag is calibrated only if it fires in at most this share of outcomes under ignorable missingness.
MAX_FALSE_ALARM = 0.05

#: Measured quantity -> (value, Monte Carlo SE): false-alarm rate and power per outcome (selected structure).
MEASURED: dict[str, tuple[float, float]] = {}
#: Simulated datasets per condition behind :data:`MEASURED`.
N_DATASETS: int = 0


def reporting_bias_flag_calibrated() -> bool:
    """Whether the flag's false-alarm rate was within :data:`MAX_FALSE_ALARM` (2 MCSE allowed)."""
    if "false_alarm" not in MEASURED:
        return False
    rate, mcse = MEASURED["false_alarm"]
    return bool(rate - 2.0 * mcse <= MAX_FALSE_ALARM)


def reporting_bias_calibration_text() -> str:
    """One sentence of the measured behaviour, for the report."""
    if "false_alarm" not in MEASURED:
        return "Its false-alarm rate and power have not been measured: it is not a calibrated flag."
    rate, rate_se = MEASURED["false_alarm"]
    power, power_se = MEASURED["power"]
    status = (
        "a calibrated flag on that design"
        if reporting_bias_flag_calibrated()
        else f"not a calibrated flag (false alarms above {MAX_FALSE_ALARM:.0%})"
    )
    return (
        f"Measured on {N_DATASETS} simulated flagship datasets per condition (README, 'Outcome-reporting bias'): "
        f"it flagged {rate:.1%} (MCSE {rate_se:.1%}) of outcomes with ignorable missingness and {power:.1%} "
        f"(MCSE {power_se:.1%}) of outcomes whose non-significant results were left unreported: {status}; "
        "other designs are not measured."
    )
