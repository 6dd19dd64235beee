"""Inputs of the multivariate model: benefit-oriented effects, within-study covariances, moderators.

Two sources:

* :func:`multivariate_data_from_dataset` - a validated :class:`~analysis.dataset.load.Dataset`: one
  effect per study and outcome (a study's comparisons combined by GLS, as for the univariate
  model, :func:`analysis.dataset.effects.study_effects`), multiplied by the outcome's ``direction``. Summary
  data do not reveal the within-study correlation of two outcomes' effects, so
  ``S_i = D_i^(1/2) R_w D_i^(1/2)`` with an *assumed* correlation ``rho_within`` (benefit scale),
  unless the caller supplies a study's covariance in ``within_cov``.
* :func:`multivariate_data_from_effects` - effect-level data with *known* within-study covariances
  given as matrix rows, as metafor's ``dat.berkey1998`` (columns ``trial, outcome, yi, v1i, v2i``;
  the ``v*i`` columns of a trial's rows, in row order, form its covariance matrix, as
  ``bldiag(lapply(split(V, trial), as.matrix))`` in metafor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.dataset.effects import EffectTable, compute_effects, study_effects
from analysis.dataset.load import Dataset, Outcome
from models.multivariate import (
    correlation_matrix,
    missingness_groups,
    within_covariance,
)

DEFAULT_OUTCOMES: tuple[str, ...] = ("BV_TV", "Tb_N", "Tb_Sp", "Tb_Th")

DEFAULT_RHO_WITHIN: float = 0.5
"""Assumed within-study correlation of two outcomes' benefit-oriented SMDs: 0.5.

Trabecular micro-CT indices are measured on the same animals and bones, so their SMDs are
correlated within a study; to first order corr(g_a, g_b) equals the animal-level correlation of
the two outcomes (Gleser & Olkin 2009). Animal-level correlations among BV/TV, Tb.N, Tb.Sp and
Tb.Th are moderate to strong (|r| ~ 0.2-0.8); Tb.Sp falls when the others rise, so *after* the
benefit flip (Tb.Sp times -1) all these correlations are positive. 0.5 is a middle value. By default rho_w is
no longer fixed but estimated under the prior :data:`models.priors.DEFAULT_RHO_WITHIN_PRIOR`
(Beta(2, 2), centred here); this value remains the one used for studies without a known
covariance when others have one, and the grid of
:func:`analysis.fitting.multivariate.rho_within_sensitivity` (0, 0.3, 0.6, 0.8) shows what fixing it
would do.
"""


@dataclass(frozen=True, eq=False)
class MultivariateData:
    """Benefit-oriented multi-outcome effects of k studies with their within-study covariances.

    Attributes
    ----------
    dataset, provenance, measure : str
        Dataset name, provenance (``"simulated"`` is labelled everywhere) and effect measure.
    study : tuple of str
        Study labels (rows).
    outcomes : tuple of Outcome
        Outcomes (columns), with their ``direction``.
    yi : numpy.ndarray
        ``(k, K)`` effects times ``direction`` (positive = benefit); NaN = not reported.
    S : numpy.ndarray
        ``(k, K, K)`` within-study covariance on the benefit scale; NaN rows/columns where not reported.
    within : str
        How ``S`` was obtained (assumed correlation or known covariances), for the report.
    rho_within : float, numpy.ndarray or None
        The assumed within-study correlation (None when all covariances were given or when it is
        estimated).
    rho_within_estimated : bool
        True if the model estimates a scalar rho_w under its prior; ``S`` then only supplies the
        variances (its off-diagonals hold the value :data:`DEFAULT_RHO_WITHIN`, used for checks).
    X : numpy.ndarray or None
        ``(k, p)`` centred moderator columns; ``coef_names`` names them.
    """

    dataset: str
    provenance: str
    measure: str
    study: tuple[str, ...]
    outcomes: tuple[Outcome, ...]
    yi: np.ndarray
    S: np.ndarray
    within: str
    rho_within: float | np.ndarray | None = None
    rho_within_estimated: bool = False
    X: np.ndarray | None = None
    coef_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        missingness_groups(self.yi)  # every study reports at least one outcome
        if len(self.outcomes) < 2:
            raise ValueError(f"the multivariate model needs at least 2 outcomes, got {[o.id for o in self.outcomes]}")

    @property
    def outcome_ids(self) -> list[str]:
        """Outcome ids in column order."""
        return [o.id for o in self.outcomes]

    @property
    def reported(self) -> np.ndarray:
        """``(k, K)`` boolean: which outcomes each study reports."""
        return ~np.isnan(self.yi)

    @property
    def vi(self) -> np.ndarray:
        """``(k, K)`` sampling variances (diagonals of ``S``)."""
        return np.diagonal(self.S, axis1=1, axis2=2).copy()


def default_outcomes(dataset: Dataset, table: EffectTable) -> list[str]:
    """The multivariate model's outcomes when none are named.

    :data:`DEFAULT_OUTCOMES` (the correlated trabecular microarchitecture measures) when at least two
    of them are reported; otherwise every outcome reported by at least two studies, of which at least
    two also report another such outcome (an outcome that no two studies share with another borrows
    almost nothing and leaves nothing to compare). May return fewer than two.
    """
    studies = {o: set(study_effects(table, o)["study"]) for o in dataset.outcomes}
    reported = [o for o, s in studies.items() if s]
    micro = [o for o in DEFAULT_OUTCOMES if o in reported]
    if len(micro) >= 2:
        return micro
    candidates = [o for o in reported if len(studies[o]) >= 2]
    shared = {o: set().union(*(studies[o] & studies[p] for p in candidates if p != o)) for o in candidates}
    return [o for o in candidates if len(shared[o]) >= 2]


def resolve_outcomes(dataset: Dataset, table: EffectTable, outcomes: Sequence[str] | str | None) -> list[str]:
    """Outcome ids to model: ``None`` -> :func:`default_outcomes`, ``"all"`` -> every reported one."""
    reported = [o for o in dataset.outcomes if not study_effects(table, o).empty]
    if outcomes is None:
        chosen = default_outcomes(dataset, table)
    elif isinstance(outcomes, str):
        if outcomes != "all":
            raise ValueError(f"outcomes must be a list of ids, 'all' or None, got {outcomes!r}")
        chosen = reported
    else:
        chosen = list(outcomes)
        bad = [o for o in chosen if o not in reported]
        if bad or len(set(chosen)) != len(chosen):
            raise ValueError(
                f"outcomes {bad or chosen} are not reported (or repeated) in {dataset.name}; reported: {reported}"
            )
    if len(chosen) < 2:
        raise ValueError(f"the multivariate model needs at least 2 reported outcomes, got {chosen}")
    return chosen


def _effect_matrix(
    dataset: Dataset, table: EffectTable, outcomes: list[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Studies reporting any of ``outcomes`` (dataset order), benefit-oriented yi and vi (NaN = missing)."""
    per = {o: study_effects(table, o).set_index("study") for o in outcomes}
    study = [s for s in dataset.studies["study"] if any(s in e.index for e in per.values())]
    yi = np.full((len(study), len(outcomes)), np.nan)
    vi = np.full_like(yi, np.nan)
    for j, o in enumerate(outcomes):
        rows = [i for i, s in enumerate(study) if s in per[o].index]
        yi[rows, j] = per[o].loc[[study[i] for i in rows], "yi"].to_numpy() * dataset.outcomes[o].direction
        vi[rows, j] = per[o].loc[[study[i] for i in rows], "vi"].to_numpy()
    return study, yi, vi


def _apply_known(
    S: np.ndarray, study: list[str], vi: np.ndarray, direction: np.ndarray, within_cov: dict
) -> np.ndarray:
    """Replace the assumed S_i by given natural-scale covariances (diagonal must equal vi)."""
    S = S.copy()
    unknown = set(within_cov) - set(study)
    if unknown:
        raise ValueError(f"within_cov names studies not in the data: {sorted(unknown)}")
    for name, cov in within_cov.items():
        i = study.index(name)
        cov = np.asarray(cov, dtype=float)
        obs = ~np.isnan(vi[i])
        if cov.shape != S.shape[1:] or not np.allclose(np.diag(cov)[obs], vi[i, obs], rtol=1e-6, atol=0.0):
            raise ValueError(
                f"within_cov[{name!r}] must be {S.shape[1:]} (outcome order) with diagonal equal to vi {vi[i]}"
            )
        S[i] = np.outer(direction, direction) * cov
    return S


def _moderator_matrix(
    dataset: Dataset, study: list[str], moderators: Sequence[str]
) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Centred moderator columns: treatment-coded dummies for categorical, raw values for numeric ones."""
    if not moderators:
        return None, ()
    rows = dataset.studies.set_index("study").loc[study]
    cols, names = [], []
    for name in moderators:
        if name not in dataset.moderators:
            raise ValueError(
                f"moderator {name!r} is not declared in {dataset.name}; declared: {list(dataset.moderators)}"
            )
        mod = dataset.moderators[name]
        if mod.type == "numeric":
            cols.append(rows[name].to_numpy(dtype=float))
            names.append(name)
            continue
        for level in sorted(set(rows[name]) - {mod.reference}):
            cols.append((rows[name] == level).to_numpy(dtype=float))
            names.append(f"{name}[{level}]")
    X = np.column_stack(cols)
    return X - X.mean(axis=0), tuple(names)


def multivariate_data_from_dataset(
    dataset: Dataset,
    *,
    outcomes: Sequence[str] | str | None = None,
    rho_within: float | np.ndarray | None = None,
    table: EffectTable | None = None,
    within_cov: dict[str, np.ndarray] | None = None,
    moderators: Sequence[str] = (),
) -> MultivariateData:
    """Build the multivariate model's input from a dataset.

    Parameters
    ----------
    dataset : Dataset
        A validated dataset.
    outcomes : list of str, "all" or None
        Outcome ids; ``None`` = :func:`default_outcomes`.
    rho_within : float, numpy.ndarray or None
        Assumed within-study correlation (benefit scale), scalar or ``(K, K)`` in outcome order;
        None (default): estimated by the model under its prior, unless ``within_cov`` is given
        (then the other studies get :data:`DEFAULT_RHO_WITHIN`).
    table : EffectTable, optional
        Precomputed effect table.
    within_cov : dict, optional
        ``study -> (K, K)`` known within-study covariance on the *natural* scale (outcome order;
        rows of unreported outcomes ignored); replaces the assumed one for that study.
    moderators : sequence of str
        Study-level moderators entering the mean of every outcome (centred columns).

    Returns
    -------
    MultivariateData
    """
    table = table or compute_effects(dataset)
    ids = resolve_outcomes(dataset, table, outcomes)
    study, yi, vi = _effect_matrix(dataset, table, ids)
    known = bool(within_cov)
    estimated = rho_within is None and not known
    if rho_within is None:
        rho_within = DEFAULT_RHO_WITHIN
    S = within_covariance(vi, rho_within)
    direction = np.array([dataset.outcomes[o].direction for o in ids], dtype=float)
    if known:
        S = _apply_known(S, study, vi, direction, within_cov)
    X, names = _moderator_matrix(dataset, study, moderators)
    rho = correlation_matrix(rho_within, len(ids)) if np.ndim(rho_within) else float(rho_within)
    within = f"assumed within-study correlation rho_w = {_rho_text(rho)} (benefit scale)"
    if estimated:
        within = "within-study correlation rho_w (one for every pair, benefit scale) estimated under its prior"
    if known:
        within += f"; known covariance for {len(within_cov)} stud{'y' if len(within_cov) == 1 else 'ies'}"
    return MultivariateData(
        dataset=dataset.name,
        provenance=dataset.provenance,
        measure=dataset.effect_measure,
        study=tuple(study),
        outcomes=tuple(dataset.outcomes[o] for o in ids),
        yi=yi,
        S=S,
        within=within,
        rho_within=None if estimated else rho,
        rho_within_estimated=estimated,
        X=X,
        coef_names=names,
    )


def _rho_text(rho: float | np.ndarray) -> str:
    if np.ndim(rho) == 0:
        return f"{float(rho):g}"
    return "matrix " + np.array2string(np.asarray(rho), precision=2, separator=", ").replace("\n", "")


def multivariate_data_from_effects(
    frame: pd.DataFrame,
    *,
    cov_columns: Sequence[str],
    study_column: str = "trial",
    outcome_column: str = "outcome",
    outcomes: Sequence[str] | None = None,
    directions: dict[str, int] | None = None,
    dataset: str = "effects",
    provenance: str = "published-example",
    measure: str = "MD",
) -> MultivariateData:
    """Build the input from effect-level rows with known within-study covariance rows (berkey1998 style).

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per study and outcome: ``study_column``, ``outcome_column``, ``yi`` and the
        ``cov_columns``; the first ``n_i`` covariance columns of a study's ``n_i`` rows, in row
        order, are its within-study covariance matrix (natural scale).
    cov_columns : sequence of str
        Covariance-row columns, e.g. ``("v1i", "v2i")``.
    study_column, outcome_column : str
        Names of the study and outcome columns.
    outcomes : sequence of str, optional
        Outcome order; default sorted ids (metafor's factor order, e.g. ``AL, PD``).
    directions : dict, optional
        ``outcome -> 1 | -1``; default 1 (no flip).
    dataset, provenance, measure : str
        Labels carried into the result.

    Returns
    -------
    MultivariateData
        With ``within`` saying the covariances are known.
    """
    ids = list(outcomes) if outcomes is not None else sorted(frame[outcome_column].astype(str).unique())
    direction = np.array([(directions or {}).get(o, 1) for o in ids], dtype=float)
    study = list(dict.fromkeys(frame[study_column].astype(str)))
    yi = np.full((len(study), len(ids)), np.nan)
    S = np.full((len(study), len(ids), len(ids)), np.nan)
    for i, (_, rows) in enumerate(frame.groupby(frame[study_column].astype(str), sort=False)):
        pos = [ids.index(o) for o in rows[outcome_column].astype(str)]
        if len(rows) > len(cov_columns) or len(set(pos)) != len(pos):
            raise ValueError(
                f"study {study[i]}: {len(rows)} rows but {len(cov_columns)} covariance columns, or a repeated outcome"
            )
        block = rows[list(cov_columns)[: len(rows)]].to_numpy(dtype=float)
        if not np.allclose(block, block.T):
            raise ValueError(f"study {study[i]}: within-study covariance rows are not symmetric: {block.tolist()}")
        yi[i, pos] = rows["yi"].to_numpy(dtype=float) * direction[pos]
        S[i][np.ix_(pos, pos)] = np.outer(direction[pos], direction[pos]) * block
    outs = tuple(Outcome(id=o, label=o, unit="", direction=int(d)) for o, d in zip(ids, direction, strict=True))
    return MultivariateData(
        dataset=dataset,
        provenance=provenance,
        measure=measure,
        study=tuple(study),
        outcomes=outs,
        yi=yi,
        S=S,
        within="known within-study covariance matrices (given)",
    )
