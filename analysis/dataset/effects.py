"""Effect-size tables: one row per treatment-vs-control comparison and outcome (metafor's ``escalc`` step).

Arm-level datasets get the dataset's ``effect_measure``: Hedges' g and metafor's "LS" variance
(``"SMD"``, :mod:`analysis.dataset.smd`; ``vtype="AV"`` gives metafor's "AV" variance instead, with
the weighted mean effect of each outcome's comparisons in place of each g), the log ratio of
means (``"ROM"``) or the normalised mean difference (``"NMD"``, :mod:`analysis.dataset.measures`);
SEM was already converted to SD on loading. Treatment arms that share a control arm form a
*covariance group*: their sampling covariance is kept (Gleser & Olkin 2009 for SMD; the shared
control term for ROM and NMD) instead of silently reusing the control animals as if they were
independent.

For the univariate models each study contributes one effect per outcome:
:func:`study_effects` combines a study's comparisons by generalised least squares with their
full sampling covariance, :math:`y = w^\\top y_c / w^\\top 1`, :math:`v = 1 / 1^\\top V^{-1} 1`,
:math:`w = V^{-1} 1`, i.e. it treats the arms as estimates of the same study effect
:math:`\\theta_i` and counts the control animals once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from analysis.dataset.load import Dataset
from analysis.dataset.measures import (
    ARM_MEASURES,
    arm_effects,
    common_control_covariance,
    comparison_pairs,
    measure_problems,
    with_sham,
)
from analysis.dataset.problems import DatasetError, NotApplicable, errors
from analysis.dataset.smd import average_variance, hedges_g, shared_control_covariance

EFFECT_COLUMNS = [
    "study",
    "outcome",
    "comparison",
    "control_arm",
    "yi",
    "vi",
    "sei",
    "n_treatment",
    "n_control",
    "direction",
    "cov_group",
]
#: Sampling-variance types of Hedges' g (metafor's ``vtype``): large-sample "LS" (the default) and "AV".
VTYPES = ("LS", "AV")


@dataclass(frozen=True)
class EffectTable:
    """Comparisons of a dataset and the sampling covariance within each covariance group.

    Attributes
    ----------
    data : pandas.DataFrame
        Columns :data:`EFFECT_COLUMNS`; ``cov_group`` is ``study/outcome/control`` for
        comparisons that share a control arm with another comparison, else empty.
    covariance : dict
        ``cov_group -> (comparisons, matrix)`` for every group of two or more comparisons.
    measure : str
        Effect measure of ``yi`` (``"SMD"``, ``"ROM"``, ``"NMD"`` or that of ``effects.csv``).
    vtype : str
        Sampling-variance type of SMDs (:data:`VTYPES`); ``"LS"`` for every other measure.
    """

    data: pd.DataFrame
    covariance: dict[str, tuple[tuple[str, ...], np.ndarray]]
    measure: str = "SMD"
    vtype: str = "LS"
    #: Per-outcome results of :func:`study_effects` (a table is never changed once built).
    _per_study: dict[str, pd.DataFrame] = field(default_factory=dict, init=False, repr=False, compare=False)

    def covariance_long(self) -> pd.DataFrame:
        """Off-diagonal sampling covariances as a long table (one row per pair of comparisons)."""
        rows = []
        for group, (names, cov) in sorted(self.covariance.items()):
            first = self.data[self.data["cov_group"] == group].iloc[0]  # ids may contain "/": never split the key
            for a in range(len(names)):
                for b in range(a + 1, len(names)):
                    rows.append(
                        {
                            "study": first["study"],
                            "outcome": first["outcome"],
                            "comparison_1": names[a],
                            "comparison_2": names[b],
                            "cov": cov[a, b],
                        }
                    )
        return pd.DataFrame(rows, columns=["study", "outcome", "comparison_1", "comparison_2", "cov"])


def compute_effects(dataset: Dataset, measure: str | None = None, *, vtype: str = "LS") -> EffectTable:
    """Compute the effect-size table of a validated dataset.

    Parameters
    ----------
    dataset : Dataset
        Output of :func:`analysis.dataset.load.load_dataset`.
    measure : {"SMD", "NMD", "ROM"}, optional
        Effect measure of arm-level data; default ``dataset.effect_measure``. To analyse a
        dataset with another measure throughout (priors, labels, fits), use :func:`with_measure`.
    vtype : {"LS", "AV"}
        Sampling variance of Hedges' g, as metafor's ``escalc(measure="SMD", vtype=...)``:
        ``"LS"`` (default) uses each comparison's own g; ``"AV"`` uses the sample-size-weighted
        mean g of the outcome's comparisons (:func:`analysis.dataset.smd.average_variance`), in the
        variances and in the Gleser–Olkin covariances of comparisons sharing a control alike.
        Only SMD has an "AV" variance here.

    Returns
    -------
    EffectTable
        One row per comparison (Hedges' g, log ratio of means or ``direction * NMD`` for
        arm-level data; the given ``yi``/``vi`` for effect-level data). Sign: treatment minus
        control in natural units; ``direction`` says whether positive is benefit (1) or harm (-1).

    Raises
    ------
    DatasetError
        If the arm data cannot give ``measure`` (ROM: a mean <= 0; NMD: no sham arm, or a
        control mean equal to the sham mean), every problem located as ``arms.csv:LINE [column]``.
    ValueError
        For an unknown measure, or a measure other than the declared one for effect-level data;
        for an unknown ``vtype``, or ``"AV"`` with another measure than SMD or effect-level data.
    """
    measure = _checked_measure(dataset, dataset.effect_measure if measure is None else measure)
    _check_vtype(vtype, measure, dataset.level)
    if dataset.level == "effects":
        return _effects_from_table(dataset)
    found = errors(measure_problems(dataset.arms, measure, _directions(dataset)))
    if found:
        raise DatasetError(str(dataset.path), found)
    pairs = comparison_pairs(dataset.arms)
    direction = pairs["outcome"].map(_directions(dataset)).to_numpy(dtype=int)
    if measure == "SMD":
        yi, vi = hedges_g(pairs["mean_t"], pairs["sd_t"], pairs["n_t"], pairs["mean_c"], pairs["sd_c"], pairs["n_c"])
        control_share = np.full(len(pairs), np.nan)
        y_var = pd.Series(np.asarray(yi, dtype=float), index=pairs.index)  # the g inside (co)variances
        if vtype == "AV":
            vi, y_var = _average_variances(pairs, y_var)
    else:
        pairs = with_sham(pairs, dataset.arms) if measure == "NMD" else pairs
        yi, vi, control_share = arm_effects(pairs, measure, direction)
    data = pd.DataFrame(
        {
            "study": pairs["study"],
            "outcome": pairs["outcome"],
            "comparison": pairs["arm"],
            "control_arm": pairs["control"],
            "yi": yi,
            "vi": vi,
            "sei": np.sqrt(vi),
            "n_treatment": pairs["n_t"].astype(int),
            "n_control": pairs["n_c"].astype(int),
            "direction": direction,
        }
    )
    data["cov_group"] = ""
    covariance = {}
    for (study, outcome, control), idx in data.groupby(["study", "outcome", "control_arm"], sort=True).groups.items():
        if len(idx) < 2:
            continue
        group = f"{study}/{outcome}/{control}"
        rows = data.loc[idx]
        if measure == "SMD":
            cov = shared_control_covariance(
                y_var.loc[idx], rows["vi"], rows["n_treatment"], float(rows["n_control"].iloc[0])
            )
        else:
            cov = common_control_covariance(rows["vi"], float(control_share[idx[0]]))
        covariance[group] = (tuple(rows["comparison"]), cov)
        data.loc[idx, "cov_group"] = group
    return EffectTable(
        data=data[EFFECT_COLUMNS].reset_index(drop=True), covariance=covariance, measure=measure, vtype=vtype
    )


def _check_vtype(vtype: str, measure: str, level: str) -> None:
    if vtype not in VTYPES:
        raise ValueError(f"vtype must be one of {', '.join(VTYPES)}, got {vtype!r}")
    if vtype != "LS" and (measure != "SMD" or level == "effects"):
        raise ValueError(
            f"vtype {vtype!r} is defined for SMDs computed from arm data only; got {measure} from {level}-level data"
        )


def _average_variances(pairs: pd.DataFrame, yi: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """metafor's "AV" variances, the weighted mean g taken over each outcome's comparisons.

    Returns the variances (in row order) and, per row, the outcome's weighted mean g, which
    replaces g in the shared-control covariances as well.
    """
    vi = np.empty(len(pairs))
    g_w = pd.Series(np.nan, index=pairs.index)
    for _, idx in pairs.groupby("outcome", sort=False).groups.items():
        pos = pairs.index.get_indexer(idx)
        vi[pos], g_w.loc[idx] = average_variance(yi.loc[idx], pairs.loc[idx, "n_t"], pairs.loc[idx, "n_c"])
    return vi, g_w


def with_measure(dataset: Dataset, measure: str) -> Dataset:
    """The dataset with another arm-level effect measure, checked; everything downstream follows it.

    Fits, priors (:func:`models.priors.default_priors`), plot labels and reports all read
    ``dataset.effect_measure``, so this is the one switch (``--measure`` of the command line).

    Parameters
    ----------
    dataset : Dataset
        A loaded dataset.
    measure : {"SMD", "NMD", "ROM"}
        Effect measure; the dataset itself is returned if it already has it.

    Returns
    -------
    Dataset
        A copy with ``effect_measure = measure`` and the measure's warnings (e.g. NMD: a control
        arm better than its sham) added to ``warnings``.

    Raises
    ------
    DatasetError
        If the arm data cannot give ``measure`` (every problem located, see :func:`compute_effects`).
    ValueError
        For an unknown measure, or effect-level data (their measure is that of ``effects.csv``).
    """
    if measure == dataset.effect_measure:
        return dataset
    _checked_measure(dataset, measure)
    problems = measure_problems(dataset.arms, measure, _directions(dataset))
    if errors(problems):
        raise DatasetError(str(dataset.path), problems)
    return replace(dataset, effect_measure=measure, warnings=dataset.warnings + tuple(problems))


def _checked_measure(dataset: Dataset, measure: str) -> str:
    if dataset.level == "effects":
        if measure != dataset.effect_measure:
            raise ValueError(
                f"{dataset.name} gives precomputed effects (effects.csv, effect_measure "
                f"{dataset.effect_measure!r}): the measure cannot be changed to {measure!r}"
            )
        return measure
    if measure not in ARM_MEASURES:
        raise ValueError(f"effect measure of arm-level data must be one of {', '.join(ARM_MEASURES)}, got {measure!r}")
    return measure


def _directions(dataset: Dataset) -> dict[str, int]:
    return {k: o.direction for k, o in dataset.outcomes.items()}


def _effects_from_table(dataset: Dataset) -> EffectTable:
    eff = dataset.effects
    data = pd.DataFrame(
        {
            "study": eff["study"],
            "outcome": eff["outcome"],
            "comparison": eff["comparison"],
            "control_arm": "",
            "yi": eff["yi"],
            "vi": eff["vi"],
            "sei": eff["sei"],
            "n_treatment": eff["n_treatment"],
            "n_control": eff["n_control"],
        }
    )
    data["direction"] = data["outcome"].map(_directions(dataset)).astype(int)
    data["cov_group"] = ""
    return EffectTable(data=data[EFFECT_COLUMNS].reset_index(drop=True), covariance={}, measure=dataset.effect_measure)


def study_effects(table: EffectTable, outcome: str) -> pd.DataFrame:
    """One effect per study for ``outcome``, combining a study's comparisons by GLS.

    Parameters
    ----------
    table : EffectTable
        Output of :func:`compute_effects`.
    outcome : str
        Outcome id.

    Returns
    -------
    pandas.DataFrame
        Columns ``study, yi, vi, sei, n_comparisons, n_treatment, n_control`` in study order
        of first appearance; empty if no study reports the outcome.
    """
    if outcome not in table._per_study:
        rows = table.data[table.data["outcome"] == outcome]
        out = [_combine_study(table, study, part) for study, part in rows.groupby("study", sort=False)]
        columns = ["study", "yi", "vi", "sei", "n_comparisons", "n_treatment", "n_control"]
        table._per_study[outcome] = pd.DataFrame(out, columns=columns)
    return table._per_study[outcome].copy()


def _combine_study(table: EffectTable, study: str, part: pd.DataFrame) -> dict:
    cov = np.diag(part["vi"].to_numpy(dtype=float))
    position = {name: i for i, name in enumerate(part["comparison"])}
    for group in set(part["cov_group"]) - {""}:
        names, block = table.covariance[group]
        ix = [position[n] for n in names]
        cov[np.ix_(ix, ix)] = block
    w = np.linalg.solve(cov, np.ones(len(part)))
    vi = 1.0 / w.sum()
    yi = float(w @ part["yi"].to_numpy(dtype=float)) * vi
    n_control = (
        part.drop_duplicates("control_arm")["n_control"].sum()
        if part["control_arm"].ne("").all()
        else part["n_control"].sum()
    )
    return {
        "study": study,
        "yi": yi,
        "vi": vi,
        "sei": float(np.sqrt(vi)),
        "n_comparisons": len(part),
        "n_treatment": part["n_treatment"].sum(),
        "n_control": n_control,
    }


def outcome_effects(dataset: Dataset, table: EffectTable, outcome: str) -> pd.DataFrame:
    """One effect per study for ``outcome`` (see :func:`study_effects`).

    Raises
    ------
    NotApplicable
        If no study reports the outcome (a ValueError: ``evmeta fit --all`` skips the outcome).
    ValueError
        If the outcome is not declared in the dataset, or ``table`` was computed with another
        effect measure than ``dataset.effect_measure``.
    """
    if outcome not in dataset.outcomes:
        raise ValueError(
            f"outcome {outcome!r} is not declared in {dataset.name}; declared: {', '.join(dataset.outcomes)}"
        )
    if table.measure != dataset.effect_measure:
        raise ValueError(
            f"the effect table holds {table.measure} but {dataset.name} is analysed as {dataset.effect_measure}: "
            f"use with_measure(dataset, {table.measure!r}) so that priors and labels follow the measure"
        )
    effects = study_effects(table, outcome)
    if effects.empty:
        raise NotApplicable(f"no study of {dataset.name} reports outcome {outcome!r}")
    return effects
