"""The calibrated checks of a fit: sampled posterior p-values with their measured false-alarm rates.

A check is reported as a check (a p-value, a flag) only with the false-alarm rate measured for it
by :mod:`analysis.studies.calibration` on simulated flagship datasets without misfit
(``reports/calibration.json``). :data:`FALSE_ALARM_RATES` copies those rates;
``tests/test_calibrated_checks.py`` fails when it and the committed study disagree, so the
numbers a fit reports cannot drift from the study that measured them.
"""

from __future__ import annotations

from analysis.checks.predictive import posterior_predictive_check
from analysis.checks.predictive_arm import arm_posterior_predictive_check
from analysis.dataset.load import Dataset
from analysis.results.checks import NOMINAL_LEVEL, Check
from analysis.results.predictive import PPCResult
from analysis.results.random_effects import MetaAnalysisResult

__all__ = ["CALIBRATION_SOURCE", "FALSE_ALARM_RATES", "check_fit", "checks_of"]

#: Measured flag rate on datasets without misfit: ``(likelihood, check, nominal level) -> rate``
#: (``reports/calibration.json``, scenario ``null``).
FALSE_ALARM_RATES: dict[tuple[str, str, float], float] = {}

CALIBRATION_SOURCE = (
    "reports/calibration.json: flag rate on simulated flagship datasets without misfit "
    "(python -m analysis.studies.calibration)"
)


def checks_of(ppc: PPCResult, likelihood: str, *, nominal_level: float = NOMINAL_LEVEL) -> list[Check]:
    """The calibrated checks of one predictive check result (its sampled posterior p-values).

    Parameters
    ----------
    ppc : PPCResult
        A posterior predictive check with sampled p-values
        (:func:`analysis.checks.predictive.posterior_predictive_check` or
        :func:`analysis.checks.predictive_arm.arm_posterior_predictive_check`).
    likelihood : str
        Likelihood of the checked fit (``"arm"`` or ``"normal"``): the calibration is per likelihood.
    nominal_level : float
        Level at which each check flags.

    Returns
    -------
    list of Check
        One per statistic, with ``false_alarm_rate`` None where it has not been measured.
    """
    out = []
    for name, value in ppc.sampled.items():
        rate = FALSE_ALARM_RATES.get((likelihood, name, nominal_level))
        out.append(
            Check(
                name=name,
                statistic=value["observed"],
                p_value=value["p_value"],
                nominal_level=nominal_level,
                false_alarm_rate=rate,
                calibration=CALIBRATION_SOURCE if rate is not None else "not measured for this likelihood",
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
    result.checks = checks_of(ppc, result.likelihood)
    return ppc
