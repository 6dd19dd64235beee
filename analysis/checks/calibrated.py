"""The calibrated checks of a fit: sampled posterior p-values with their measured false-alarm rates.

A statistic flags (is a check) only when its false-alarm rate, measured by
:mod:`analysis.studies.calibration` on simulated flagship datasets without misfit
(``reports/calibration.json``), lies within :data:`TOLERANCE_MCSE` Monte Carlo standard errors of
the nominal level at every level the study measured (:func:`calibration_status`). A statistic
measured outside that band (too liberal or too conservative) keeps its p-value and measured rate
but never flags; so does one that was not measured (another effect measure than the study's).
:data:`FALSE_ALARM_RATES` copies the measured rates; ``tests/test_calibrated_checks.py`` fails when
it and the committed study disagree, so the numbers a fit reports cannot drift from the study.
"""

from __future__ import annotations

from analysis.checks.predictive import posterior_predictive_check
from analysis.checks.predictive_arm import arm_posterior_predictive_check
from analysis.dataset.load import Dataset
from analysis.results.checks import NOMINAL_LEVEL, Check
from analysis.results.predictive import PPCResult
from analysis.results.random_effects import MetaAnalysisResult

__all__ = [
    "CALIBRATED_MEASURE",
    "CALIBRATION_SOURCE",
    "FALSE_ALARM_RATES",
    "TOLERANCE_MCSE",
    "calibration_status",
    "check_fit",
    "checks_of",
]

#: The measure of the calibration study's data (the flagship design): rates apply to fits on it only.
CALIBRATED_MEASURE = "SMD"
#: A statistic is calibrated when its measured false-alarm rate is within this many Monte Carlo SE
#: of the level at every measured level (about a two-sided 5% test of calibration per level).
TOLERANCE_MCSE = 2.0
#: Measured flag rate and its Monte Carlo SE on datasets without misfit:
#: ``(likelihood, statistic, nominal level) -> (rate, mcse)`` (``reports/calibration.json``, scenario ``null``).
FALSE_ALARM_RATES: dict[tuple[str, str, float], tuple[float, float]] = {
    ("arm", "max_std_residual", 0.05): (0.03, 0.006970004898166676),
    ("arm", "max_std_residual", 0.1): (0.07666666666666666, 0.010870991010823738),
    ("arm", "Q", 0.05): (0.03, 0.006970004898166676),
    ("arm", "Q", 0.1): (0.06333333333333334, 0.009951654607119496),
    ("arm", "egger_slope", 0.05): (0.028333333333333332, 0.0067794439811645945),
    ("arm", "egger_slope", 0.1): (0.07333333333333333, 0.010651213068267638),
    ("normal", "max_std_residual", 0.05): (0.04666666666666667, 0.008618116656555042),
    ("normal", "max_std_residual", 0.1): (0.10166666666666667, 0.012347943639034823),
    ("normal", "Q", 0.05): (0.03166666666666667, 0.007154844593005843),
    ("normal", "Q", 0.1): (0.07666666666666666, 0.010870991010823738),
    ("normal", "egger_slope", 0.05): (0.43, 0.02022824683332484),
    ("normal", "egger_slope", 0.1): (0.6116666666666667, 0.019913441889145633),
}

CALIBRATION_SOURCE = (
    "reports/calibration.json: flag rate on simulated flagship datasets without misfit "
    "(python -m analysis.studies.calibration)"
)


def calibration_status(likelihood: str, name: str, measure: str) -> bool | None:
    """Whether a statistic is calibrated for a likelihood and measure: True, False, or None (not measured).

    True when every measured level's false-alarm rate is within :data:`TOLERANCE_MCSE` Monte Carlo SE
    of the level, False when one is not, None for other measures than :data:`CALIBRATED_MEASURE`
    or a statistic the study did not measure.
    """
    measured = {lev: v for (lik, n, lev), v in FALSE_ALARM_RATES.items() if lik == likelihood and n == name}
    if measure != CALIBRATED_MEASURE or not measured:
        return None
    return all(abs(rate - level) <= TOLERANCE_MCSE * mcse for level, (rate, mcse) in measured.items())


def checks_of(
    ppc: PPCResult, likelihood: str, *, measure: str = "SMD", nominal_level: float = NOMINAL_LEVEL
) -> list[Check]:
    """The calibrated checks of one predictive check result (its sampled posterior p-values).

    Parameters
    ----------
    ppc : PPCResult
        A posterior predictive check with sampled p-values
        (:func:`analysis.checks.predictive.posterior_predictive_check` or
        :func:`analysis.checks.predictive_arm.arm_posterior_predictive_check`).
    likelihood : str
        Likelihood of the checked fit (``"arm"`` or ``"normal"``): the calibration is per likelihood.
    measure : str
        Effect measure of the fit (the calibration is of :data:`CALIBRATED_MEASURE`).
    nominal_level : float
        Level at which each check flags.

    Returns
    -------
    list of Check
        One per statistic, with its measured false-alarm rate and ``calibrated``
        (:func:`calibration_status`); only a calibrated check flags. A statistic measured outside
        the band keeps its p-value and rate but is not a check; one not measured at this level or
        for this measure has neither rate nor flag.
    """
    out = []
    for name, value in ppc.sampled.items():
        status = calibration_status(likelihood, name, measure)
        measured = FALSE_ALARM_RATES.get((likelihood, name, nominal_level)) if status is not None else None
        where = f"not measured for {likelihood}/{measure}" if measured is None else CALIBRATION_SOURCE
        out.append(
            Check(
                name=name,
                statistic=value["observed"],
                p_value=value["p_value"],
                nominal_level=nominal_level,
                false_alarm_rate=None if measured is None else measured[0],
                calibration=where,
                calibrated=None if measured is None else status,
            )
        )
    return out


def check_fit(result: MetaAnalysisResult, dataset: Dataset, *, seed: int = 1) -> PPCResult | None:
    """Run the predictive check of a NUTS fit and store its calibrated checks in ``result.checks``.

    Arm-level fits (random effects or meta-regression) get
    :func:`~analysis.checks.predictive_arm.arm_posterior_predictive_check`, normal-likelihood
    random-effects fits :func:`~analysis.checks.predictive.posterior_predictive_check`; other fits
    (exact engine, other models) are left without checks.

    Returns
    -------
    PPCResult or None
        The predictive check, or None where none applies.
    """
    if result.posterior is None:
        return None
    if result.likelihood == "arm":
        ppc = arm_posterior_predictive_check(result, dataset, seed=seed)
    elif result.likelihood == "normal" and result.model == "random-effects":
        ppc = posterior_predictive_check(result, seed=seed)
    else:
        return None
    result.checks = checks_of(ppc, result.likelihood, measure=result.measure)
    return ppc
