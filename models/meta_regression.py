r"""Random-effects meta-regression: design matrix from study-level moderators, slope priors, NUTS graph.

Model, for studies :math:`i = 1..k` with observed effects :math:`y_i`, known sampling variances
:math:`v_i` and moderator row :math:`x_i` (without the intercept):

.. math::

    y_i \mid \theta_i &\sim \mathcal N(\theta_i, v_i), \\
    \theta_i \mid \mu, \beta, \tau &\sim \mathcal N(\mu + x_i^\top \beta, \tau^2), \\
    \mu &\sim \mathcal N(m_\mu, s_\mu^2) \quad\text{(the prior of } \mu \text{ of the plain model)}, \\
    \beta_j &\sim \mathcal N(0, s_j^2), \qquad \tau \sim p(\tau),

so :math:`\tau` is the *residual* between-study SD. In the code the intercept is the first
coefficient (``"intercept"``) of :math:`\beta` and the design matrix is :math:`[1, x_i^\top]`.

Coding (:func:`build_design`)
    *Categorical* moderators use treatment coding against the declared reference level: one 0/1
    column ``name[level]`` per other level, so its coefficient is the contrast
    level − reference. Levels come from the declaration (or, undeclared, the observed values
    sorted), reference first. A level with no analysed study gets no column (noted); if the
    reference itself has no study, the first present level in declared order becomes the
    reference (noted); a level with a single study is kept (noted: its contrast rests on one
    study). *Numeric* moderators are centred at their mean over the analysed studies
    (``center=True``; the centre is stored), so the intercept is the expected effect at the
    reference levels and the mean moderator values; ``center=False`` keeps the raw values
    (e.g. to reproduce bayesmeta ``bmr``'s design ``[1, x]``). A moderator with fewer than two
    distinct values among the analysed studies cannot be estimated: :func:`build_design` raises
    :class:`ModeratorNotEstimable` (a ``ValueError``) naming it, unless ``skip_constant=True``,
    which drops it with a note (used for ``moderators="all"``).

Slope priors (:func:`slope_prior_sds`)
    Zero-centred normals, on a common *standardised* scale (Gelman 2008, Stat Med 27:2865): a
    categorical contrast gets sd ``S`` directly (SMD units); a numeric slope gets
    ``S / (2 sd(x))`` per unit, i.e. sd ``S`` for the effect of a two-SD change of the moderator
    (the change that matches a balanced 0/1 contrast). The per-unit sds are rounded to four
    significant digits so that the reported prior strings are the priors used.
    Defaults: ``S = 1`` (:data:`DEFAULT_SLOPE_SD_SEPARATE`) for one moderator at a time, and
    ``S = 0.5`` (:data:`DEFAULT_SLOPE_SD_JOINT`) when several moderators enter jointly; see those
    constants for the reasons. ``per="unit"`` uses ``S`` per unit of every column instead (e.g.
    the ``N(0, 10^2)`` of bmr's reference analysis).

Variance explained (:func:`bayes_r2_draws`)
    The share of the between-study variance of the true effects that the moderators explain,
    per posterior draw ``s`` of ``(beta, tau)`` of *this* model (Gelman, Goodrich, Gabry &
    Vehtari 2019, "R-squared for Bayesian regression models", Am Stat 73:307-309):
    :math:`R^2_s = V_s / (V_s + \tau_s^2)`, with :math:`V_s` the variance over the ``k``
    studies of the fitted moderator part :math:`x_i^\top \beta_s` (intercept excluded). Its
    posterior (not one number) carries the uncertainty of both parts.

This module builds designs and graphs only; it does no I/O and no fitting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import pandas as pd
import pymc as pm

from models.priors import PriorSpec
from models.random_effects import build_random_effects_model

__all__ = [
    "DEFAULT_SLOPE_SD_JOINT",
    "DEFAULT_SLOPE_SD_SEPARATE",
    "INTERCEPT",
    "Design",
    "ModeratorLike",
    "ModeratorNotEstimable",
    "Term",
    "bayes_r2_draws",
    "build_design",
    "build_meta_regression_model",
    "coef_name",
    "slope_prior_sds",
]

INTERCEPT = "intercept"

DEFAULT_SLOPE_SD_SEPARATE: float = 1.0
"""Default prior sd S of a slope when one moderator is analysed at a time (standardised scale).

β ~ N(0, 1²) for a subgroup contrast (or a two-SD change of a numeric moderator) on the SMD
scale: 95% prior mass within ±2 SMD, which covers every subgroup difference seen in preclinical
meta-analyses (typically |Δ| < 1) while ruling out absurd ones; centred on no difference.
"""

DEFAULT_SLOPE_SD_JOINT: float = 0.5
"""Default prior sd S of each slope when several moderators enter jointly (standardised scale).

β ~ N(0, 0.5²): 95% mass within ±1 SMD. With k ≈ 5-10 studies and up to five coefficients the
joint model is close to saturated (and moderators are often confounded), so the slopes are
regularised toward no moderation, in the spirit of ridge / weakly informative regression priors
(Gelman et al. 2008, Ann Appl Stat 2:1360). Plausible moderator effects (0.2-0.5 SMD) are well
inside the prior.
"""

_RESERVED = ("mu", "tau", "I2", "theta_new", INTERCEPT)


class ModeratorNotEstimable(ValueError):
    """A moderator has fewer than two distinct values among the analysed studies."""

    def __init__(self, moderator: str, reason: str) -> None:
        super().__init__(f"moderator {moderator!r} cannot be estimated: {reason}")
        self.moderator, self.reason = moderator, reason


class ModeratorLike(Protocol):
    """What :func:`build_design` needs of a moderator declaration (e.g. ``analysis.dataset.load.Moderator``)."""

    name: str
    type: str
    reference: str | None
    levels: tuple[str, ...] | None


@dataclass(frozen=True)
class Term:
    """How one moderator enters the design.

    Attributes
    ----------
    moderator, type : str
        Moderator name; ``"categorical"`` or ``"numeric"``.
    columns : tuple of str
        Coefficient names of its design columns (``name[level]`` per non-reference level, or
        ``name`` for a numeric moderator).
    reference : str or None
        Reference level actually used (categorical).
    levels : tuple of str
        Levels with at least one analysed study, reference first (categorical).
    counts : dict
        Number of analysed studies per level (categorical, including dropped levels with 0).
    dropped_levels : tuple of str
        Declared levels without an analysed study (no column).
    mean, sd, centre : float or None
        Mean and SD (ddof=1) over the analysed studies, and the value subtracted (numeric).
    """

    moderator: str
    type: str
    columns: tuple[str, ...]
    reference: str | None = None
    levels: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)
    dropped_levels: tuple[str, ...] = ()
    mean: float | None = None
    sd: float | None = None
    centre: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready description of the coding."""
        out = {"moderator": self.moderator, "type": self.type, "columns": list(self.columns)}
        if self.type == "categorical":
            return out | {
                "coding": "treatment",
                "reference": self.reference,
                "levels": list(self.levels),
                "n_studies": dict(self.counts),
                "dropped_levels": list(self.dropped_levels),
            }
        return out | {"mean": self.mean, "sd": self.sd, "centre": self.centre}


@dataclass(frozen=True)
class Design:
    """Design matrix ``[1, x_i']`` of a meta-regression with its coding and notes.

    Attributes
    ----------
    X : numpy.ndarray
        ``(k, p)`` design matrix; column 0 is the intercept.
    coef_names : tuple of str
        ``"intercept"``, then ``moderator[level]`` per treatment-coded level and ``moderator``
        per numeric moderator (see :func:`coef_name`).
    study : tuple of str
        Study label of each row.
    terms : tuple of Term
        Coding of each moderator in the model.
    notes : tuple of str
        Dropped or single-study levels, re-referencing, skipped moderators, rank problems.
    center : bool
        Whether numeric moderators were centred.
    """

    X: np.ndarray
    coef_names: tuple[str, ...]
    study: tuple[str, ...]
    terms: tuple[Term, ...]
    notes: tuple[str, ...]
    center: bool

    @property
    def k(self) -> int:
        """Number of studies (rows)."""
        return self.X.shape[0]

    @property
    def p(self) -> int:
        """Number of coefficients, intercept included."""
        return self.X.shape[1]

    def baseline(self) -> np.ndarray:
        """Design row of the baseline: reference levels and numeric moderators at their mean."""
        x = np.zeros(self.p)
        x[0] = 1.0
        for term in self.terms:
            if term.type == "numeric":
                x[self.coef_names.index(term.columns[0])] = term.mean - term.centre
        return x

    def level_row(self, moderator: str, level: str) -> np.ndarray:
        """Baseline row with ``moderator`` set to ``level`` (expected effect of that subgroup)."""
        term = self.term(moderator)
        if term.type != "categorical" or level not in term.levels:
            raise ValueError(f"{level!r} is not an estimable level of categorical moderator {moderator!r}")
        x = self.baseline()
        if level != term.reference:
            x[self.coef_names.index(coef_name(moderator, level))] = 1.0
        return x

    def term(self, moderator: str) -> Term:
        """The term of ``moderator``."""
        for term in self.terms:
            if term.moderator == moderator:
                return term
        raise KeyError(f"moderator {moderator!r} is not in this design")


def coef_name(moderator: str, level: str | None = None) -> str:
    """Coefficient name: ``moderator[level]`` for a treatment-coded level, else ``moderator``.

    ``/`` is replaced by ``_`` because PyMC variable names become DataTree paths (NetCDF groups).
    """
    name = moderator if level is None else f"{moderator}[{level}]"
    return name.replace("/", "_")


def build_design(
    studies: pd.DataFrame,
    moderators: Sequence[ModeratorLike],
    *,
    center: bool = True,
    skip_constant: bool = False,
) -> Design:
    """Design matrix of a meta-regression on the given moderators (see the module docstring).

    Parameters
    ----------
    studies : pandas.DataFrame
        One row per analysed study, in model order: column ``study`` and one column per moderator.
    moderators : sequence of ModeratorLike
        Declarations (``name``, ``type``, ``reference``, ``levels``), in column order.
    center : bool
        Centre numeric moderators at their mean over these studies (default) or keep raw values.
    skip_constant : bool
        Drop moderators that cannot be estimated (with a note) instead of raising.

    Returns
    -------
    Design

    Raises
    ------
    ModeratorNotEstimable
        If a moderator has fewer than two distinct values (and ``skip_constant`` is false).
    ValueError
        On a missing column, an unknown type, a reserved or duplicate name, or no moderator.
    """
    if not moderators:
        raise ValueError("a meta-regression needs at least one moderator")
    names = [m.name for m in moderators]
    if len(set(names)) != len(names) or any(n in _RESERVED for n in names):
        raise ValueError(f"moderator names must be unique and not one of {_RESERVED}, got {names}")
    columns, terms, notes = [np.ones(len(studies))], [], []
    for mod in moderators:
        if mod.name not in studies.columns:
            raise ValueError(f"moderator {mod.name!r} has no column in the study table")
        try:
            term, block, term_notes = _encode(studies.set_index("study")[mod.name], mod, center=center)
        except ModeratorNotEstimable as err:
            if not skip_constant:
                raise
            notes.append(f"{mod.name} skipped: {err.reason}")
            continue
        columns.append(block)
        terms.append(term)
        notes.extend(term_notes)
    if not terms:
        raise ModeratorNotEstimable(", ".join(names), "no moderator varies across the analysed studies")
    X = np.column_stack([np.reshape(c, (len(studies), -1)) for c in columns])
    coef_names = (INTERCEPT, *(c for t in terms for c in t.columns))
    notes.extend(_rank_notes(X, coef_names))
    return Design(
        X=X,
        coef_names=coef_names,
        study=tuple(studies["study"].astype(str)),
        terms=tuple(terms),
        notes=tuple(notes),
        center=center,
    )


def _encode(values: pd.Series, mod: ModeratorLike, *, center: bool) -> tuple[Term, np.ndarray, list[str]]:
    if mod.type == "categorical":
        return _encode_categorical(values.astype(str), mod)
    if mod.type == "numeric":
        return _encode_numeric(values.astype(float), mod.name, center=center)
    raise ValueError(f"moderator {mod.name!r} has unknown type {mod.type!r}")


def _encode_categorical(values: pd.Series, mod: ModeratorLike) -> tuple[Term, np.ndarray, list[str]]:
    observed = sorted(set(values))
    declared = list(mod.levels) if mod.levels else observed
    declared += [v for v in observed if v not in declared]
    reference = mod.reference if mod.reference in declared else declared[0]
    ordered = [reference] + [v for v in declared if v != reference]
    counts = {level: int((values == level).sum()) for level in ordered}
    present = [level for level in ordered if counts[level] > 0]
    if len(present) < 2:
        raise ModeratorNotEstimable(
            mod.name, f"all analysed studies have level {present[0]!r}" if present else "no studies"
        )
    notes = [
        f"{mod.name}: level {lvl!r} has no study for this outcome; its column is dropped"
        for lvl in ordered
        if counts[lvl] == 0
    ]
    if counts[reference] == 0:
        notes.append(f"{mod.name}: reference {reference!r} has no study; reference set to {present[0]!r}")
        reference = present[0]
    notes += [
        f"{mod.name}: level {lvl!r} has a single study ({values.index[values == lvl][0]}); its subgroup "
        "estimate and contrast rest on that study"
        for lvl in present
        if counts[lvl] == 1
    ]
    others = [lvl for lvl in present if lvl != reference]
    block = np.column_stack([(values == lvl).to_numpy(dtype=float) for lvl in others])
    term = Term(
        moderator=mod.name,
        type="categorical",
        columns=tuple(coef_name(mod.name, lvl) for lvl in others),
        reference=reference,
        levels=tuple(present),
        counts=counts,
        dropped_levels=tuple(lvl for lvl in ordered if counts[lvl] == 0),
    )
    return term, block, notes


def _encode_numeric(values: pd.Series, name: str, *, center: bool) -> tuple[Term, np.ndarray, list[str]]:
    x = values.to_numpy(dtype=float)
    if np.unique(x).size < 2:
        raise ModeratorNotEstimable(
            name, f"constant ({x[0]:g}) across the analysed studies" if x.size else "no studies"
        )
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    centre = mean if center else 0.0
    term = Term(moderator=name, type="numeric", columns=(coef_name(name),), mean=mean, sd=sd, centre=centre)
    return term, x - centre, []


def _rank_notes(X: np.ndarray, coef_names: Sequence[str]) -> list[str]:
    notes = []
    k, p = X.shape
    if np.linalg.matrix_rank(X) < p:
        notes.append(
            f"design is rank-deficient (rank {np.linalg.matrix_rank(X)} < {p} coefficients): "
            "some coefficients are aliased and identified only by their priors"
        )
    if p >= k:
        notes.append(f"{p} coefficients for {k} studies: the residual tau is identified mainly by its prior")
    return notes


def _round_sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def slope_prior_sds(
    design: Design, scale: float, *, per: Literal["standardised", "unit"] = "standardised"
) -> dict[str, float]:
    """Prior sd of every slope (per unit of its column), from the standardised scale ``S``.

    Parameters
    ----------
    design : Design
        The design matrix and its coding.
    scale : float
        ``S`` > 0: prior sd of a categorical contrast and of a two-SD change of a numeric
        moderator (``per="standardised"``), or of every coefficient per unit (``per="unit"``).
    per : {"standardised", "unit"}
        Scale on which ``S`` is stated.

    Returns
    -------
    dict
        Coefficient name (intercept excluded) -> prior sd per unit of the design column.
    """
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"the slope prior sd must be a positive number, got {scale}")
    if per not in ("standardised", "unit"):
        raise ValueError(f"per must be 'standardised' or 'unit', got {per!r}")
    out = {}
    for term in design.terms:
        for column in term.columns:
            numeric = term.type == "numeric" and per == "standardised"
            out[column] = _round_sig(scale / (2.0 * term.sd)) if numeric else float(scale)
    return out


def build_meta_regression_model(
    yi: np.ndarray,
    vi: np.ndarray,
    design: Design,
    *,
    tau_prior: PriorSpec,
    intercept_prior: PriorSpec,
    slope_sds: Mapping[str, float],
) -> pm.Model:
    """PyMC graph of the meta-regression (θ integrated out), via :func:`build_random_effects_model`.

    Parameters
    ----------
    yi, vi : numpy.ndarray
        Effects and sampling variances, one per design row.
    design : Design
        Design matrix and coefficient names.
    tau_prior : PriorSpec
        Prior of the residual between-study SD.
    intercept_prior : PriorSpec
        ``normal:M:S`` prior of the intercept (the μ prior of the plain model).
    slope_sds : mapping
        Prior sd of each slope (:func:`slope_prior_sds`); slopes are ``N(0, sd²)``.

    Returns
    -------
    pymc.Model
        Free ``beta_<coef>`` and ``tau``; deterministic ``beta`` (dim ``coef``).
    """
    if intercept_prior.family != "normal":
        raise ValueError(f"the intercept prior must be normal:M:S, got {intercept_prior}")
    priors = [intercept_prior] + [PriorSpec("normal", (0.0, slope_sds[c])) for c in design.coef_names[1:]]
    return build_random_effects_model(
        yi,
        vi,
        study=list(design.study),
        tau_prior=tau_prior,
        beta_priors=priors,
        X=design.X,
        coef_names=list(design.coef_names),
    )


def bayes_r2_draws(X: np.ndarray, beta: np.ndarray, tau: np.ndarray) -> np.ndarray:
    r"""Bayesian R² of the between-study variance, one value per posterior draw.

    Gelman, Goodrich, Gabry & Vehtari (2019, Am Stat 73:307) define R² per draw as the variance
    of the fitted values over the variance of the fitted values plus the residual variance. In a
    random-effects meta-regression the "data" are the true study effects ``theta_i``, the fitted
    values the moderator part ``x_i' beta`` and the residual variance ``tau²``:

    .. math::

        R^2_s = \frac{V_s}{V_s + \tau_s^2}, \qquad
        V_s = \frac{1}{k - 1} \sum_{i=1}^k \bigl(x_i^\top \beta_s - \overline{x^\top \beta_s}\bigr)^2,

    with the intercept column left out of ``x_i`` (a constant does not vary across studies, so
    it would not change ``V_s``). Every draw lies in [0, 1]; a draw with ``V_s + tau_s² = 0``
    (nothing to explain and nothing explained) counts as 0.

    Parameters
    ----------
    X : numpy.ndarray
        ``(k, p)`` design matrix, column 0 the intercept (:attr:`Design.X`), ``k >= 2``.
    beta : numpy.ndarray
        ``(n, p)`` posterior draws of the coefficients (intercept first).
    tau : numpy.ndarray
        ``(n,)`` posterior draws of the residual between-study SD, in the same order.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` draws of R².

    Raises
    ------
    ValueError
        On mismatched shapes, fewer than two studies, or non-finite or negative ``tau``.
    """
    X, beta, tau = np.asarray(X, dtype=float), np.asarray(beta, dtype=float), np.asarray(tau, dtype=float)
    if X.ndim != 2 or X.shape[0] < 2 or beta.ndim != 2 or beta.shape[1] != X.shape[1] or tau.shape != beta.shape[:1]:
        raise ValueError(
            f"need X (k >= 2, p), beta (n, p) and tau (n,); got shapes {X.shape}, {beta.shape}, {tau.shape}"
        )
    if not np.all(np.isfinite(tau)) or np.any(tau < 0):
        raise ValueError("tau draws must be finite and non-negative")
    fitted = beta[:, 1:] @ X[:, 1:].T
    explained = fitted.var(axis=1, ddof=1)
    total = explained + tau**2
    return np.divide(explained, total, out=np.zeros_like(total), where=total > 0)
