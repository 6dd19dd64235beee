"""Report lines of the risk-of-bias sensitivity of one outcome (:mod:`analysis.checks.risk_of_bias`)."""

from __future__ import annotations

import pandas as pd

from analysis.checks.risk_of_bias import KEY_DOMAIN_GROUPS, MIN_K_REGRESSION_LEVEL, MIN_K_SUBSET, RobSensitivity
from analysis.report.tables import interval, markdown_table

__all__ = ["ROB_HEADING", "rob_sensitivity_lines"]

ROB_HEADING = "#### Risk of bias: sensitivity by SYRCLE domain (exact engine, normal likelihood)"
_DASH = "—"


def rob_sensitivity_lines(oid: str, result: RobSensitivity) -> list[str]:
    """Markdown lines of the risk-of-bias sensitivity of outcome ``oid``: heading, method, table, notes.

    Parameters
    ----------
    oid : str
        Outcome id (the section belongs to this outcome).
    result : RobSensitivity
        The analysis of that outcome (:func:`analysis.checks.risk_of_bias.rob_sensitivity`).

    Returns
    -------
    list of str
        Lines ending with an empty line.
    """
    if result.outcome.id != oid:
        raise ValueError(f"the risk-of-bias result is of outcome {result.outcome.id!r}, not {oid!r}")
    lines = [ROB_HEADING, "", _method_text(result), "", markdown_table(_rows(result)), ""]
    if result.notes:
        lines += [*(f"- {note}" for note in result.notes), ""]
    return lines


def _method_text(result: RobSensitivity) -> str:
    better = "higher" if result.outcome.direction > 0 else "lower"
    groups = "; ".join(f"{name}: {', '.join(domains)}" for name, domains in KEY_DOMAIN_GROUPS.items())
    coef_prior = f", coefficient ~ {result.priors['coef']}" if "coef" in result.priors else ""
    return (
        "A study is at low risk on a group of key SYRCLE domains when it is judged low on every domain of the group "
        f"in the dataset ({groups}). μ (low-risk) is the random-effects model fitted to those studies alone "
        f"(at least {MIN_K_SUBSET}); Δ is the meta-regression coefficient of the indicator low risk (1) vs unclear "
        "or high (0) over all studies: the expected effect of low-risk studies minus the others (treatment − "
        f"control; {better} is better), fitted when each side has at least {MIN_K_REGRESSION_LEVEL} studies. "
        "Both compare studies, not randomised arms: they show how much the pooled effect rests on studies at "
        "unclear or high risk, and are not tests. "
        f"Priors: μ ~ {result.priors['mu']}, τ ~ {result.priors['tau']}{coef_prior}."
    )


def _rows(result: RobSensitivity) -> pd.DataFrame:
    rows = [
        {
            "studies": "all studies",
            "k": str(result.k_total),
            "μ mean [eti95]": interval(result.mu),
            "τ median [eti95]": _median_interval(result.tau),
            "P(benefit)": f"{result.prob_benefit:.3f}",
            "Δ low − other [eti95]": _DASH,
            "P(low-risk more benefit)": _DASH,
        }
    ]
    for g in result.groups:
        rows.append(
            {
                "studies": f"low risk on {g.group}",
                "k": f"{g.k_low} of {g.k_total}" if g.domains else _DASH,
                "μ mean [eti95]": interval(g.mu) if g.mu else _DASH,
                "τ median [eti95]": _median_interval(g.tau) if g.tau else _DASH,
                "P(benefit)": _DASH if g.prob_benefit is None else f"{g.prob_benefit:.3f}",
                "Δ low − other [eti95]": interval(g.coef) if g.coef else _DASH,
                "P(low-risk more benefit)": (
                    _DASH if g.prob_low_more_benefit is None else f"{g.prob_low_more_benefit:.3f}"
                ),
            }
        )
    return pd.DataFrame(rows)


def _median_interval(summary: dict[str, float], digits: int = 2) -> str:
    return f"{summary['median']:.{digits}f} [{summary['q025']:.{digits}f}, {summary['q975']:.{digits}f}]"
