r"""Risk of bias in the inference: the pooled effect of one outcome by SYRCLE judgement (issue 16, item 5).

For a group of key SYRCLE domains :math:`G` (randomisation: sequence generation and allocation
concealment; blinding: performance and outcome-assessment blinding; both: all four), study
:math:`i` is *at low risk on* :math:`G` (:math:`L_i = 1`) when it is judged ``low`` on every
domain of :math:`G` that the dataset judges; ``unclear`` or ``high`` on any of them gives
:math:`L_i = 0`. With :math:`y_i, v_i` the study's effect and sampling variance (comparisons of a
study combined by GLS, as for every normal-likelihood fit), two models are fitted with the exact
engine (quadrature over :math:`\tau`, no sampling) under the priors of the main analysis:

* **low-risk subset**: :math:`y_i \sim \mathcal N(\theta_i, v_i)`,
  :math:`\theta_i \sim \mathcal N(\mu_G, \tau_G^2)` over the studies with :math:`L_i = 1` only
  (:func:`analysis.fitting.random_effects.fit_random_effects`), beside :math:`\mu` of all studies;
* **meta-regression** on the indicator, over all studies:
  :math:`\theta_i \sim \mathcal N(\mu + \beta_G L_i, \tau^2)`
  (:func:`analysis.fitting.meta_regression.fit_meta_regression`; prior
  :math:`\beta_G \sim \mathcal N(0, S^2)`, the default of a categorical contrast), so
  :math:`\beta_G` is the expected effect of low-risk studies minus that of the other studies, on
  the scale of :math:`y_i` (treatment − control). Its posterior and
  :math:`P(\text{direction} \cdot \beta_G > 0)`, the probability that low-risk studies show
  more benefit (``direction`` of the outcome), are reported as such, not as a test.

Both are between-study comparisons (studies at low risk differ in other ways too), so they show
how much the pooled effect leans on studies at unclear or high risk, not a causal bias. A subset
of fewer than :data:`MIN_K_SUBSET` studies, and a meta-regression without
:data:`MIN_K_REGRESSION_LEVEL` studies on each side, are not fitted; a note says so.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from analysis.dataset.effects import EffectTable, compute_effects, outcome_effects
from analysis.dataset.load import Dataset, Moderator, Outcome
from analysis.dataset.problems import NotApplicable
from analysis.fitting.meta_regression import fit_meta_regression
from analysis.fitting.random_effects import fit_random_effects
from models.meta_regression import coef_name
from models.priors import PriorSet, default_priors

__all__ = [
    "KEY_DOMAIN_GROUPS",
    "MIN_K_REGRESSION_LEVEL",
    "MIN_K_SUBSET",
    "MODEL",
    "RobGroup",
    "RobSensitivity",
    "low_risk_studies",
    "rob_sensitivity",
    "subset_table",
]

#: Key domain groups of the SYRCLE tool (Hooijmans et al. 2014, BMC Med Res Methodol 14:43): group -> domains.
KEY_DOMAIN_GROUPS: dict[str, tuple[str, ...]] = {
    "randomisation": ("sequence_generation", "allocation_concealment"),
    "blinding": ("blinding_performance", "blinding_outcome"),
    "both": ("sequence_generation", "allocation_concealment", "blinding_performance", "blinding_outcome"),
}

#: How each group reads in a sentence ("at low risk of bias on ...").
_GROUP_WORDS = {"randomisation": "randomisation", "blinding": "blinding", "both": "randomisation and blinding"}

MIN_K_SUBSET: int = 3
"""Fewest low-risk studies for a subset fit.

A random-effects fit of fewer than three studies leaves τ entirely to its prior: one study
carries no information on τ and two carry almost none (a single difference), so μ's interval
would only restate the τ prior. Three is the smallest subset whose τ the data begin to inform.
"""

MIN_K_REGRESSION_LEVEL: int = 2
"""Fewest studies at low risk, and fewest others, for the meta-regression on the indicator.

With a single study on one side its coefficient is that study's deviation from the others,
confounded with its own θ_i (the residual τ cannot separate them).
"""

#: The model every number of :class:`RobSensitivity` comes from.
MODEL = "exact engine, normal likelihood"

#: Name and levels of the indicator moderator of the meta-regression (coefficient: low − other).
_INDICATOR, _LOW, _OTHER = "low_risk", "low", "other"
_INTERVAL_KEYS = ("mean", "median", "q025", "q975")


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RobGroup:
    """The sensitivity analysis of one key-domain group.

    Attributes
    ----------
    group : str
        ``"randomisation"``, ``"blinding"`` or ``"both"``.
    domains : tuple of str
        The group's domains that the dataset judges (the others are named in ``notes``).
    k_low, k_total : int
        Studies of the outcome at low risk on the group, and all studies of the outcome.
    low_studies : tuple of str
        The studies at low risk.
    mu, tau : dict or None
        Low-risk subset fit: ``{mean, median, q025, q975}`` (95% equal-tailed); None when not fitted.
    prob_benefit : float or None
        P(μ of the low-risk subset favours treatment), using the outcome's direction.
    coef : dict or None
        Meta-regression coefficient of the indicator low risk (1) vs unclear/high (0):
        ``{mean, median, q025, q975}``; None when not fitted.
    prob_low_more_benefit : float or None
        P(direction × coefficient > 0): low-risk studies show more benefit than the others.
    coef_prior : str or None
        Prior of the coefficient (e.g. ``"normal:0:1"``).
    notes : tuple of str
        Why something was not fitted, and which domains the dataset lacks.
    """

    group: str
    domains: tuple[str, ...]
    k_low: int
    k_total: int
    low_studies: tuple[str, ...]
    mu: dict[str, float] | None = None
    tau: dict[str, float] | None = None
    prob_benefit: float | None = None
    coef: dict[str, float] | None = None
    prob_low_more_benefit: float | None = None
    coef_prior: str | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready: ``{group, domains, k_low, k_total, low_studies, subset, regression, note}``."""
        subset = None if self.mu is None else {"mu": self.mu, "tau": self.tau, "prob_benefit": self.prob_benefit}
        regression = (
            None
            if self.coef is None
            else {"coef": self.coef, "prob_low_more_benefit": self.prob_low_more_benefit, "prior": self.coef_prior}
        )
        return {
            "group": self.group,
            "domains": list(self.domains),
            "k_low": self.k_low,
            "k_total": self.k_total,
            "low_studies": list(self.low_studies),
            "subset": subset,
            "regression": regression,
            "note": " ".join(self.notes) or None,
        }


@dataclass(frozen=True)
class RobSensitivity:
    """Risk-of-bias sensitivity of one outcome: the low-risk subsets and the meta-regressions.

    Attributes
    ----------
    dataset, provenance : str
        Dataset name and provenance (simulated results are labelled as such).
    outcome : Outcome
        The outcome (its ``direction`` gives the benefit side).
    priors : dict
        Prior strings of ``mu`` and ``tau`` (every fit) and ``coef`` (the meta-regressions).
    k_total : int
        Studies reporting the outcome.
    mu, tau : dict
        All-studies fit, for comparison: ``{mean, median, q025, q975}``.
    prob_benefit : float
        P(all-studies μ favours treatment).
    groups : tuple of RobGroup
        One per key-domain group, in :data:`KEY_DOMAIN_GROUPS` order.
    model : str
        :data:`MODEL`.
    """

    dataset: str
    provenance: str
    outcome: Outcome
    priors: dict[str, str]
    k_total: int
    mu: dict[str, float]
    tau: dict[str, float]
    prob_benefit: float
    groups: tuple[RobGroup, ...]
    model: str = MODEL

    @property
    def notes(self) -> list[str]:
        """Every group's notes, in group order."""
        return [note for g in self.groups for note in g.notes]

    def to_dict(self) -> dict:
        """JSON-ready summary (``outcome``, ``model``, ``priors``, ``all_studies`` and ``groups``)."""
        return {
            "dataset": self.dataset,
            "provenance": self.provenance,
            "outcome": self.outcome.id,
            "direction": self.outcome.direction,
            "model": self.model,
            "priors": dict(self.priors),
            "all_studies": {"k": self.k_total, "mu": self.mu, "tau": self.tau, "prob_benefit": self.prob_benefit},
            "groups": [g.to_dict() for g in self.groups],
        }

    def table(self) -> pd.DataFrame:
        """One row for all studies, then one per group (NaN where a fit was not made).

        Columns: ``group, domains, k_low, k_total, mu_mean, mu_q025, mu_q975, tau_median,
        tau_q025, tau_q975, prob_benefit, coef_mean, coef_q025, coef_q975, prob_low_more_benefit``
        (``mu``/``tau``/``prob_benefit``: the all-studies fit in the first row, the low-risk subset
        below; ``k_low`` is missing in the first row).
        """
        rows = [_table_row("all studies", (), None, self.k_total, self.mu, self.tau, self.prob_benefit)]
        rows += [
            _table_row(g.group, g.domains, g.k_low, g.k_total, g.mu, g.tau, g.prob_benefit)
            | _coef_columns(g.coef, g.prob_low_more_benefit)
            for g in self.groups
        ]
        frame = pd.DataFrame(rows)
        frame["k_low"] = frame["k_low"].astype("Int64")
        return frame


def _table_row(
    group: str,
    domains: Sequence[str],
    k_low: int | None,
    k_total: int,
    mu: dict[str, float] | None,
    tau: dict[str, float] | None,
    prob_benefit: float | None,
) -> dict:
    nan = float("nan")
    return {
        "group": group,
        "domains": ", ".join(domains),
        "k_low": k_low,
        "k_total": k_total,
        "mu_mean": mu["mean"] if mu else nan,
        "mu_q025": mu["q025"] if mu else nan,
        "mu_q975": mu["q975"] if mu else nan,
        "tau_median": tau["median"] if tau else nan,
        "tau_q025": tau["q025"] if tau else nan,
        "tau_q975": tau["q975"] if tau else nan,
        "prob_benefit": nan if prob_benefit is None else prob_benefit,
    } | _coef_columns(None, None)


def _coef_columns(coef: dict[str, float] | None, prob: float | None) -> dict[str, float]:
    nan = float("nan")
    return {
        "coef_mean": coef["mean"] if coef else nan,
        "coef_q025": coef["q025"] if coef else nan,
        "coef_q975": coef["q975"] if coef else nan,
        "prob_low_more_benefit": nan if prob is None else prob,
    }


# --- analysis --------------------------------------------------------------------------------


def rob_sensitivity(
    dataset: Dataset,
    outcome: str,
    *,
    priors: PriorSet | None = None,
    table: EffectTable | None = None,
) -> RobSensitivity:
    """Pooled effect among studies at low risk of bias on the key SYRCLE domains, and its meta-regression.

    Parameters
    ----------
    dataset : Dataset
        A validated dataset whose ``studies`` table has ``rob_<domain>`` columns.
    outcome : str
        Outcome id declared in the dataset.
    priors : PriorSet, optional
        Priors of μ and τ (default :func:`models.priors.default_priors` of the effect measure);
        the coefficient gets the default prior of a categorical contrast.
    table : EffectTable, optional
        Precomputed effect table of the dataset (computed if omitted).

    Returns
    -------
    RobSensitivity

    Raises
    ------
    NotApplicable
        If the dataset judges none of the key domains, or no study reports the outcome.
    ValueError
        If the outcome is not declared in the dataset.
    """
    present = _judged_key_domains(dataset)
    priors = priors or default_priors(dataset.effect_measure)
    table = table or compute_effects(dataset)
    study = outcome_effects(dataset, table, outcome)["study"].astype(str).tolist()
    everyone = fit_random_effects(dataset, outcome, engine="exact", priors=priors, table=table)
    studies = dataset.studies[dataset.studies["study"].astype(str).isin(study)]
    groups = tuple(
        _group(dataset, outcome, name, [d for d in domains if d in present], studies, priors, table)
        for name, domains in KEY_DOMAIN_GROUPS.items()
    )
    coef_prior = next((g.coef_prior for g in groups if g.coef_prior), None)
    return RobSensitivity(
        dataset=dataset.name,
        provenance=dataset.provenance,
        outcome=dataset.outcomes[outcome],
        priors=priors.to_dict() | ({"coef": coef_prior} if coef_prior else {}),
        k_total=len(study),
        mu=_interval(everyone.summaries["mu"]),
        tau=_interval(everyone.summaries["tau"]),
        prob_benefit=everyone.prob_benefit,
        groups=groups,
    )


def low_risk_studies(studies: pd.DataFrame, domains: Sequence[str]) -> list[str]:
    """Studies judged ``low`` (case-insensitive) on every one of ``domains``, in table order.

    Parameters
    ----------
    studies : pandas.DataFrame
        A studies table with column ``study`` and the ``rob_<domain>`` columns of ``domains``.
    domains : sequence of str
        SYRCLE domains without the ``rob_`` prefix; none: no study is at low risk.
    """
    if not domains:
        return []
    judged = studies[[f"rob_{d}" for d in domains]].apply(_normalised)
    return studies.loc[(judged == "low").all(axis=1), "study"].astype(str).tolist()


def _normalised(column: pd.Series) -> pd.Series:
    return column.fillna("").astype(str).str.strip().str.lower()


def _judged_key_domains(dataset: Dataset) -> set[str]:
    """The key domains with a ``rob_`` column; NotApplicable if there is none."""
    wanted = {d for domains in KEY_DOMAIN_GROUPS.values() for d in domains}
    judged = [c for c in dataset.studies.columns if c.startswith("rob_")]
    present = {c.removeprefix("rob_") for c in judged} & wanted
    if not present:
        has = f"its rob_ columns ({', '.join(judged)}) include none of" if judged else "it has no rob_ columns for"
        key = ", ".join(f"rob_{d}" for d in KEY_DOMAIN_GROUPS["both"])
        raise NotApplicable(
            f"{dataset.name} has no SYRCLE judgement of randomisation or blinding: {has} the key domains ({key})"
        )
    return present


def _group(
    dataset: Dataset,
    outcome: str,
    name: str,
    domains: list[str],
    studies: pd.DataFrame,
    priors: PriorSet,
    table: EffectTable,
) -> RobGroup:
    """Subset fit and meta-regression of one group, or the notes saying why they were not made."""
    words, k_total = _GROUP_WORDS[name], len(studies)
    low = low_risk_studies(studies, domains)
    base = RobGroup(group=name, domains=tuple(domains), k_low=len(low), k_total=k_total, low_studies=tuple(low))
    notes = _domain_notes(name, domains)
    if not domains:
        return replace(base, notes=tuple(notes))
    fit_subset = len(low) >= MIN_K_SUBSET
    fit_regression = min(len(low), k_total - len(low)) >= MIN_K_REGRESSION_LEVEL
    notes += _skip_notes(studies, domains, words, len(low), fit_subset=fit_subset, fit_regression=fit_regression)
    subset = _subset(dataset, outcome, low, priors, table) if fit_subset else {}
    regression = _regression(dataset, outcome, low, priors, table) if fit_regression else {}
    return replace(base, **subset, **regression, notes=tuple(notes))


def _domain_notes(name: str, domains: Sequence[str]) -> list[str]:
    wanted = KEY_DOMAIN_GROUPS[name]
    missing = [d for d in wanted if d not in domains]
    if not missing:
        return []
    if not domains:
        return [f"The dataset has no judgement on {_GROUP_WORDS[name]} ({', '.join(wanted)}): {name} is not analysed."]
    judged, absent = ", ".join(domains), ", ".join(missing)
    return [f"Low risk on {_GROUP_WORDS[name]} is judged on {judged} only ({absent}: not in the dataset)."]


def _skip_notes(
    studies: pd.DataFrame,
    domains: Sequence[str],
    words: str,
    k_low: int,
    *,
    fit_subset: bool,
    fit_regression: bool,
) -> list[str]:
    """The required note when too few studies are at low risk (or too few are not) to fit."""
    k_total = len(studies)
    need = f"at least {MIN_K_REGRESSION_LEVEL} studies at low risk and {MIN_K_REGRESSION_LEVEL} others"
    counts = f"here {k_low} and {k_total - k_low}"
    if not fit_subset:
        head = f"{_count_phrase(k_low, k_total)} at low risk of bias on {words}{_per_domain(studies, domains)}"
        note = f"{head}: the low-risk subset is not analysed (a random-effects fit needs {MIN_K_SUBSET}+ studies)"
        return [note + ("." if fit_regression else f", and no meta-regression is fitted (it needs {need}; {counts}).")]
    if fit_regression:
        return []
    return [f"The meta-regression on low risk of bias on {words} is not fitted: it needs {need} ({counts})."]


def _per_domain(studies: pd.DataFrame, domains: Sequence[str]) -> str:
    """`` (low on a: 5, b: 0)`` for a group of several domains, which shows the one that rules studies out."""
    if len(domains) < 2:
        return ""
    counts = [f"{d}: {len(low_risk_studies(studies, [d]))}" for d in domains]
    return f" (studies low on {', '.join(counts)})"


def _subset(dataset: Dataset, outcome: str, low: list[str], priors: PriorSet, table: EffectTable) -> dict:
    """Fields ``mu, tau, prob_benefit`` of the random-effects fit of the low-risk studies alone."""
    fit = fit_random_effects(dataset, outcome, engine="exact", priors=priors, table=subset_table(table, low))
    fields = {"mu": _interval(fit.summaries["mu"]), "tau": _interval(fit.summaries["tau"])}
    return fields | {"prob_benefit": fit.prob_benefit}


def _regression(dataset: Dataset, outcome: str, low: list[str], priors: PriorSet, table: EffectTable) -> dict:
    """Fields ``coef, prob_low_more_benefit, coef_prior`` of the meta-regression on the low-risk indicator."""
    fit = fit_meta_regression(
        _with_indicator(dataset, low),
        outcome,
        moderators=[_INDICATOR],
        engine="exact",
        priors=priors,
        table=table,
    )
    (contrast,) = fit.contrasts
    return {
        "coef": _interval(contrast),
        "prob_low_more_benefit": float(contrast["prob_benefit"]),
        "coef_prior": fit.priors[coef_name(_INDICATOR, _LOW)],
    }


def _count_phrase(k: int, k_total: int) -> str:
    if k == 0:
        return f"No study of {k_total} is"
    return f"Only {k} of {k_total} studies {'is' if k == 1 else 'are'}"


def subset_table(table: EffectTable, studies: Collection[str]) -> EffectTable:
    """The effect table restricted to ``studies`` (rows and within-study covariance blocks).

    Parameters
    ----------
    table : EffectTable
        Effect table of a dataset.
    studies : collection of str
        Studies to keep.
    """
    data = table.data[table.data["study"].astype(str).isin(set(studies))].reset_index(drop=True)
    kept = set(data["cov_group"]) - {""}
    covariance = {group: block for group, block in table.covariance.items() if group in kept}
    return EffectTable(data=data, covariance=covariance, measure=table.measure, vtype=table.vtype)


def _with_indicator(dataset: Dataset, low: Collection[str]) -> Dataset:
    """The dataset with one categorical study-level moderator: ``low`` vs ``other`` (the reference)."""
    study = dataset.studies["study"]
    indicator = np.where(study.astype(str).isin(set(low)), _LOW, _OTHER)
    studies = pd.DataFrame({"study": study, _INDICATOR: indicator})
    moderator = Moderator(name=_INDICATOR, type="categorical", reference=_OTHER, levels=(_OTHER, _LOW))
    return replace(dataset, studies=studies, moderators={_INDICATOR: moderator})


def _interval(summary: dict[str, float]) -> dict[str, float]:
    return {key: float(summary[key]) for key in _INTERVAL_KEYS}
