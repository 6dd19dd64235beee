r"""Arm-level effect measures besides Hedges' g (ROM, NMD), their data checks, and SEs from confidence intervals.

``effect_measure`` of an arm-level dataset is ``"SMD"`` (Hedges' g, :mod:`analysis.dataset.smd`),
``"ROM"`` or ``"NMD"``. For a treatment arm (mean :math:`m_t`, SD :math:`s_t`, size :math:`n_t`)
compared with its control arm (:math:`m_c, s_c, n_c`):

**ROM**, the log ratio of means (Hedges, Gurevitch & Curtis 1999, Ecology 80:1150-1156), exactly
metafor's ``escalc(measure="ROM", m1i=m_t, ..., m2i=m_c, ...)`` with its default large-sample
(delta-method) variance; both means must be positive:

.. math::

    y = \log(m_t / m_c), \qquad v = \frac{s_t^2}{n_t m_t^2} + \frac{s_c^2}{n_c m_c^2}.

Treatment arms compared with the same control share :math:`\log m_c`: their sampling covariance
is :math:`\operatorname{Var}(\log m_c) = s_c^2 / (n_c m_c^2)`.

**NMD**, the normalised mean difference (Vesterinen et al. 2014, J Neurosci Methods 221:92-102),
uses the study's sham arm (role ``sham``, same study and outcome, mean :math:`m_s`): the
percentage of the model-induced deficit :math:`m_s - m_c` that the treatment restores,

.. math::

    \mathrm{NMD} = 100\,\frac{m_t - m_c}{m_s - m_c}, \qquad
    s^*_g = 100\,\frac{s_g}{|m_c - m_s|}, \qquad
    v = \frac{s^{*2}_c}{n_c} + \frac{s^{*2}_t}{n_t},

positive = towards the sham = benefit, whatever the outcome's direction. As in Vesterinen et al.,
the sham mean (hence the deficit) is treated as fixed: its sampling error is not part of
:math:`v`. evmeta's ``yi`` are on the natural scale (treatment minus control) and the benefit is
``direction * yi`` everywhere (forest plots, P(benefit), every model), so NMD is stored as
``yi = direction * NMD``, i.e. :math:`100\,(m_t - m_c) / |m_s - m_c|` when the sham lies on the
better side of the control. Treatment arms sharing a control share :math:`m_c`: their sampling
covariance is :math:`s^{*2}_c / n_c`.

**Confidence intervals** of ``effects.csv`` (:func:`sei_from_ci`): a symmetric ``level`` interval
of a normal estimate has half-width :math:`z_{(1+\mathrm{level})/2}\,SE`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from analysis.dataset.problems import Problem
from analysis.dataset.read import ARMS_NAME

#: Effect measures computed from arm-level data (``dataset.toml`` ``effect_measure``).
ARM_MEASURES = ("SMD", "NMD", "ROM")
#: NMD is a percentage of the model-induced deficit.
NMD_PERCENT = 100.0
#: Coverage of an ``effects.csv`` confidence interval whose ``ci_level`` cell is empty or absent.
DEFAULT_CI_LEVEL = 0.95
#: Column of a typed arm table holding each row's editor line in ``arms.csv`` (for located errors).
LINE_COLUMN = "csv_line"


def log_ratio_of_means(
    m1: np.ndarray, sd1: np.ndarray, n1: np.ndarray, m2: np.ndarray, sd2: np.ndarray, n2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Log ratio of means (treatment 1 over control 2) and its delta-method variance (metafor's ROM).

    Parameters
    ----------
    m1, sd1, n1 : array_like
        Mean (> 0), standard deviation and size of the treatment arm(s).
    m2, sd2, n2 : array_like
        Mean (> 0), standard deviation and size of the control arm(s).

    Returns
    -------
    yi, vi : numpy.ndarray
        ``log(m1 / m2)`` and ``sd1²/(n1 m1²) + sd2²/(n2 m2²)``.
    """
    m1, m2 = np.asarray(m1, dtype=float), np.asarray(m2, dtype=float)
    yi = np.log(m1 / m2)
    vi = rom_control_variance(m1, sd1, n1) + rom_control_variance(m2, sd2, n2)
    return yi, vi


def rom_control_variance(m: np.ndarray, sd: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Delta-method variance of ``log(mean)`` of one arm, ``sd²/(n m²)``.

    For a control arm this is the sampling covariance of two log ratios of means that share it.
    """
    m, sd, n = (np.asarray(a, dtype=float) for a in (m, sd, n))
    return sd**2 / (n * m**2)


def normalised_mean_difference(
    m1: np.ndarray,
    sd1: np.ndarray,
    n1: np.ndarray,
    m2: np.ndarray,
    sd2: np.ndarray,
    n2: np.ndarray,
    m_sham: np.ndarray,
    direction: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised mean difference (Vesterinen et al. 2014), stored as ``yi = direction * NMD``.

    Parameters
    ----------
    m1, sd1, n1 : array_like
        Mean, standard deviation and size of the treatment arm(s).
    m2, sd2, n2 : array_like
        Mean, standard deviation and size of the control arm(s).
    m_sham : array_like
        Mean of the study's sham arm for the outcome (treated as fixed: no sampling error).
    direction : array_like
        1 if higher is better, -1 if lower is better.

    Returns
    -------
    yi, vi : numpy.ndarray
        ``direction * 100 (m1 - m2) / (m_sham - m2)`` and ``SD*_2²/n2 + SD*_1²/n1`` with
        ``SD*_g = 100 sd_g / |m2 - m_sham|`` (see the module docstring).
    """
    m1, m2, m_sham = (np.asarray(a, dtype=float) for a in (m1, m2, m_sham))
    nmd = NMD_PERCENT * (m1 - m2) / (m_sham - m2)
    vi = nmd_control_variance(sd1, n1, m2, m_sham) + nmd_control_variance(sd2, n2, m2, m_sham)
    return np.asarray(direction, dtype=float) * nmd, vi


def nmd_control_variance(sd: np.ndarray, n: np.ndarray, m_control: np.ndarray, m_sham: np.ndarray) -> np.ndarray:
    """``SD*²/n`` of one arm, ``SD* = 100 sd / |m_control - m_sham|`` (the deficit is fixed).

    For a control arm this is the sampling covariance of two NMDs that share it.
    """
    sd, n = np.asarray(sd, dtype=float), np.asarray(n, dtype=float)
    deficit = np.abs(np.asarray(m_control, dtype=float) - np.asarray(m_sham, dtype=float))
    return (NMD_PERCENT * sd / deficit) ** 2 / n


def common_control_covariance(vi: np.ndarray, shared: float) -> np.ndarray:
    """Sampling covariance of comparisons sharing one control arm whose share of each ``vi`` is ``shared``.

    For ROM and NMD every comparison is (treatment term) − (control term) with the same control
    term, so the covariance of any two is the control term's variance ``shared``
    (:func:`rom_control_variance`, :func:`nmd_control_variance`); ``vi`` is the diagonal.
    """
    vi = np.asarray(vi, dtype=float)
    cov = np.full((vi.size, vi.size), float(shared))
    np.fill_diagonal(cov, vi)
    return cov


def sei_from_ci(lower: np.ndarray, upper: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Standard error of a normal estimate from its symmetric confidence interval.

    Parameters
    ----------
    lower, upper : array_like
        Bounds of the interval (``lower < upper``).
    level : array_like
        Coverage in (0, 1), e.g. 0.95.

    Returns
    -------
    numpy.ndarray
        ``(upper - lower) / (2 z)`` with ``z`` the ``(1 + level) / 2`` normal quantile (1.959964 at 95%).
    """
    lower, upper, level = (np.asarray(a, dtype=float) for a in (lower, upper, level))
    return (upper - lower) / (2.0 * stats.norm.ppf((1.0 + level) / 2.0))


def comparison_pairs(arms: pd.DataFrame) -> pd.DataFrame:
    """Join each treatment row to its control row (named in ``control_arm`` or the study's only control).

    Columns of the treatment row get the suffix ``_t`` and those of the control row ``_c`` where
    both have them (``mean``, ``sd``, ``n`` and, in typed tables, :data:`LINE_COLUMN`); the
    control arm's id is in ``control``.
    """
    treat = arms[arms["role"] == "treatment"].copy()
    ctrl = arms[arms["role"] == "control"]
    sole = ctrl.groupby(["study", "outcome"])["arm"].first()
    named = treat["control_arm"].where(treat["control_arm"] != "")
    treat["control"] = named.fillna(
        pd.Series(sole.reindex(pd.MultiIndex.from_frame(treat[["study", "outcome"]])).to_numpy(), index=treat.index)
    )
    kept = ["study", "outcome", "arm", "mean", "sd", "n"] + ([LINE_COLUMN] if LINE_COLUMN in arms else [])
    merged = treat.merge(
        ctrl[kept].rename(columns={"arm": "control"}),
        on=["study", "outcome", "control"],
        suffixes=("_t", "_c"),
        validate="many_to_one",
    )
    return merged.reset_index(drop=True)


def with_sham(pairs: pd.DataFrame, arms: pd.DataFrame) -> pd.DataFrame:
    """Comparison pairs with the mean (``mean_s``) and arm id (``sham``) of their study's sham arm.

    Pairs without a sham arm for their study and outcome get NaN; with several sham arms the
    first is used (:func:`measure_problems` reports both cases for NMD).
    """
    sham = (
        arms[arms["role"] == "sham"]
        .drop_duplicates(["study", "outcome"])[["study", "outcome", "arm", "mean"]]
        .rename(columns={"arm": "sham", "mean": "mean_s"})
    )
    return pairs.merge(sham, on=["study", "outcome"], how="left", validate="many_to_one")


def arm_effects(pairs: pd.DataFrame, measure: str, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Effect sizes of comparison pairs under ``measure`` (``"ROM"`` or ``"NMD"``).

    Parameters
    ----------
    pairs : pandas.DataFrame
        :func:`comparison_pairs`, with :func:`with_sham` for NMD.
    measure : {"ROM", "NMD"}
        Effect measure.
    direction : numpy.ndarray
        Direction of each pair's outcome (used by NMD).

    Returns
    -------
    yi, vi, control_share : numpy.ndarray
        Effect, sampling variance and the control arm's share of ``vi`` (the covariance of
        comparisons sharing the control, :func:`common_control_covariance`).
    """
    t = [pairs[c].to_numpy(dtype=float) for c in ("mean_t", "sd_t", "n_t")]
    c = [pairs[c].to_numpy(dtype=float) for c in ("mean_c", "sd_c", "n_c")]
    if measure == "ROM":
        yi, vi = log_ratio_of_means(*t, *c)
        return yi, vi, rom_control_variance(*c)
    if measure == "NMD":
        m_sham = pairs["mean_s"].to_numpy(dtype=float)
        yi, vi = normalised_mean_difference(*t, *c, m_sham, direction)
        return yi, vi, nmd_control_variance(c[1], c[2], c[0], m_sham)
    raise ValueError(f"arm_effects computes ROM or NMD, got {measure!r} (Hedges' g is analysis.dataset.smd)")


def measure_problems(arms: pd.DataFrame, measure: str, directions: Mapping[str, int]) -> list[Problem]:
    """Located problems of arm data that are specific to ``measure`` (none for SMD).

    Parameters
    ----------
    arms : pandas.DataFrame
        Arm rows that passed the row checks, with float ``mean``, ``sd``, ``n``, the columns
        ``study, arm, role, outcome, control_arm`` and each row's editor line in :data:`LINE_COLUMN`.
    measure : str
        One of :data:`ARM_MEASURES`.
    directions : mapping
        Outcome id -> direction (1 or -1).

    Returns
    -------
    list of Problem
        ROM: an error for every treatment or control arm whose mean is not positive. NMD: an
        error per study and outcome without a sham arm (or with several), per control arm whose
        mean equals the sham mean, and a warning per control arm that is *better* than the sham
        (no model-induced deficit: NMD's sign then reads backwards). Both: an error per
        comparison whose effect size is not a finite double.
    """
    if measure == "ROM":
        problems = _rom_problems(arms)
    elif measure == "NMD":
        problems = _nmd_problems(arms, directions)
    else:
        return []
    if any(p.severity == "error" for p in problems):
        return problems
    return problems + _finite_problems(arms, measure, directions)


def _rom_problems(arms: pd.DataFrame) -> list[Problem]:
    compared = arms[arms["role"].isin(("treatment", "control")) & ~(arms["mean"] > 0)]
    return [
        Problem(
            "error",
            ARMS_NAME,
            int(row[LINE_COLUMN]),
            "mean",
            f"ROM (log ratio of means) needs positive means: {row['role']} arm {row['arm']!r} of study "
            f"{row['study']!r} has mean {row['mean']:g} for outcome {row['outcome']!r}",
        )
        for row in compared.to_dict("records")
    ]


def _nmd_problems(arms: pd.DataFrame, directions: Mapping[str, int]) -> list[Problem]:
    problems = []
    shams = arms[arms["role"] == "sham"]
    for (study, outcome), rows in shams.groupby(["study", "outcome"], sort=False):
        if len(rows) > 1:
            problems.append(
                Problem(
                    "error",
                    ARMS_NAME,
                    int(rows[LINE_COLUMN].iloc[1]),
                    "role",
                    f"study {study!r} has several sham arms for outcome {outcome!r} "
                    f"({', '.join(map(repr, rows['arm']))}): NMD needs exactly one",
                )
            )
    pairs = with_sham(comparison_pairs(arms), arms)
    for row in pairs[pairs["sham"].isna()].drop_duplicates(["study", "outcome"]).to_dict("records"):
        problems.append(
            Problem(
                "error",
                ARMS_NAME,
                int(row[f"{LINE_COLUMN}_t"]),
                "role",
                f"NMD needs a sham arm: study {row['study']!r} has no arm with role 'sham' for outcome "
                f"{row['outcome']!r} (add the sham group's mean, or use effect_measure SMD or ROM)",
            )
        )
    for row in pairs[pairs["sham"].notna()].drop_duplicates(["study", "outcome", "control"]).to_dict("records"):
        problems += _deficit_problems(row, directions[row["outcome"]])
    return problems


def _deficit_problems(row: dict, direction: int) -> list[Problem]:
    """NMD divides by the deficit m_sham - m_control: it must be non-zero, and should be a deficit."""
    line, deficit = int(row[f"{LINE_COLUMN}_c"]), direction * (row["mean_s"] - row["mean_c"])
    where = f"control arm {row['control']!r} of study {row['study']!r} (outcome {row['outcome']!r})"
    if deficit == 0:
        return [
            Problem(
                "error",
                ARMS_NAME,
                line,
                "mean",
                f"NMD is undefined: the {where} has the same mean as sham arm {row['sham']!r} "
                f"({row['mean_c']:g}), so there is no deficit to normalise by",
            )
        ]
    if deficit < 0:
        return [
            Problem(
                "warning",
                ARMS_NAME,
                line,
                "mean",
                f"the {where} is better than sham arm {row['sham']!r} ({row['mean_c']:g} vs {row['mean_s']:g}, "
                f"direction {direction:+d}): the model induced no deficit, so a positive NMD here means the "
                "treatment moved the outcome towards the sham, i.e. made it worse",
            )
        ]
    return []


def _finite_problems(arms: pd.DataFrame, measure: str, directions: Mapping[str, int]) -> list[Problem]:
    """Errors for comparisons whose effect size or variance over/underflows double precision."""
    pairs = comparison_pairs(arms)
    if measure == "NMD":
        pairs = with_sham(pairs, arms)
    direction = pairs["outcome"].map(directions).to_numpy(dtype=float)
    with np.errstate(all="ignore"):
        yi, vi, _ = arm_effects(pairs, measure, direction)
    bad = ~(np.isfinite(yi) & np.isfinite(vi) & (vi > 0))
    return [
        Problem(
            "error",
            ARMS_NAME,
            int(row[f"{LINE_COLUMN}_t"]),
            "mean",
            f"the {measure} of the comparison with control arm {row['control']!r} is not a finite number "
            "with a positive variance: the means or SDs are too large or too small for double precision",
        )
        for row in pairs[bad].to_dict("records")
    ]
