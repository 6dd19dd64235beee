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
MEASURED: dict[str, tuple[float, float]] = {
    "false_alarm": (0.0000, 0.0000),
    "power": (0.1176, 0.0276),
}
#: Simulated datasets per condition behind :data:`MEASURED`, and outcomes with missing studies behind each rate.
N_DATASETS: int = 50
N_OUTCOMES: dict[str, int] = {"false_alarm": 150, "power": 136}


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
    # a rate of 0 has MCSE 0: state the rule-of-three 95% upper bound instead
    n_null = N_OUTCOMES["false_alarm"]
    alarm = (
        f"{rate:.1%} (MCSE {rate_se:.1%}) of the {n_null} outcomes with ignorable missingness"
        if rate > 0
        else f"none of the {n_null} outcomes with ignorable missingness (95% upper bound {3 / n_null:.1%}, rule of 3)"
    )
    status = (
        "a calibrated but weak flag on that design: a flag is strong evidence, its absence is not evidence of no bias"
        if reporting_bias_flag_calibrated() and power < 0.5
        else "a calibrated flag on that design"
        if reporting_bias_flag_calibrated()
        else f"not a calibrated flag (false alarms above {MAX_FALSE_ALARM:.0%})"
    )
    return (
        f"Measured on {N_DATASETS} simulated flagship datasets per condition (README, 'Outcome-reporting bias'): "
        f"it flagged {alarm} and {power:.1%} (MCSE {power_se:.1%}) of the {N_OUTCOMES['power']} outcomes whose "
        f"non-significant results were left unreported: {status}; other designs are not measured."
    )
