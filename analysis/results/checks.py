"""One calibrated model check of a fit: the ``checks`` entries of every fit's JSON."""

from __future__ import annotations

from dataclasses import dataclass

#: Level at which a check is flagged unless the caller chooses another.
NOMINAL_LEVEL: float = 0.05


@dataclass(frozen=True)
class Check:
    """A model check with a p-value that is uniform when the model is right.

    Attributes
    ----------
    name : str
        Check id (``"Q"``, ``"max_std_residual"``, ``"egger_slope"``).
    statistic : float
        The discrepancy on the observed data (at the posterior draw the p-value uses).
    p_value : float
        Sampled posterior predictive p-value (:mod:`analysis.checks.predictive`).
    nominal_level : float
        The check flags when ``p_value < nominal_level``.
    false_alarm_rate : float or None
        Flag rate at ``nominal_level`` measured on datasets without misfit (the flagship design,
        ``reports/calibration.json``); None where it has not been measured.
    calibration : str
        Where ``false_alarm_rate`` comes from, in words.
    calibrated : bool or None
        True when the measured false-alarm rates lie within the calibration band of the level
        (:func:`analysis.checks.calibrated.calibration_status`), False when measured outside it,
        None when not measured. Only a calibrated check flags.
    """

    name: str
    statistic: float
    p_value: float
    nominal_level: float
    false_alarm_rate: float | None
    calibration: str
    calibrated: bool | None = None

    @property
    def flagged(self) -> bool | None:
        """True if the p-value is below the nominal level; None unless the check is calibrated."""
        if self.calibrated is not True:
            return None
        return self.p_value < self.nominal_level

    def to_dict(self) -> dict[str, str | float | bool | None]:
        """JSON-ready: every attribute and ``flagged``."""
        return {
            "name": self.name,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "nominal_level": self.nominal_level,
            "flagged": self.flagged,
            "false_alarm_rate": self.false_alarm_rate,
            "calibrated": self.calibrated,
            "calibration": self.calibration,
        }
