"""Moderator values per comparison: the rows of a comparison-level meta-regression.

A study-level moderator (``level = "study"`` in ``dataset.toml``) has one value per study, in
``studies.csv``; a comparison-level moderator (``level = "comparison"``) has one value per
comparison, on the treatment row of ``arms.csv`` (or the row of ``effects.csv``). The
*comparison table* of an outcome has one row per comparison, exactly those of
:func:`analysis.dataset.effects.compute_effects` for that outcome and in its order, and one
column per declared moderator: a study's value repeated on each of its comparisons, or the
comparison's own value. It is a valid ``studies`` argument of
:func:`models.meta_regression.build_design` (one design row per comparison).
"""

from __future__ import annotations

import pandas as pd

from analysis.dataset.load import Dataset
from analysis.dataset.measures import comparison_pairs

__all__ = ["KEY_COLUMNS", "comparison_table", "varies_within_studies"]

#: Columns identifying a comparison: its study, treatment arm (``comparison`` of effect-level
#: data) and control arm (empty for effect-level data).
KEY_COLUMNS = ("study", "arm", "control_arm")


def comparison_table(dataset: Dataset, outcome: str) -> pd.DataFrame:
    """One row per comparison of ``outcome`` with the value of every declared moderator.

    Parameters
    ----------
    dataset : Dataset
        A loaded dataset (arm- or effect-level).
    outcome : str
        Outcome id declared in the dataset.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`KEY_COLUMNS` (``arm``: the treatment arm, i.e. the ``comparison`` column
        of :func:`analysis.dataset.effects.compute_effects`; ``control_arm``: its control arm)
        then one column per moderator of ``dataset.moderators`` in declaration order, typed as
        loaded (numeric: float, categorical: str). Rows are the comparisons of ``outcome`` in
        the order of ``compute_effects(dataset).data``; empty (with these columns) if no
        comparison reports the outcome. The index is 0..n-1.

    Raises
    ------
    ValueError
        If ``outcome`` is not declared in the dataset, or a moderator is named like a key column.
    """
    if outcome not in dataset.outcomes:
        raise ValueError(
            f"outcome {outcome!r} is not declared in {dataset.name}; declared: {', '.join(dataset.outcomes)}"
        )
    clash = [name for name in dataset.moderators if name in KEY_COLUMNS]
    if clash:
        raise ValueError(f"moderators {clash} of {dataset.name} are named like key columns {KEY_COLUMNS}: rename them")
    rows = _comparison_rows(dataset, outcome)
    study_level = [n for n, m in dataset.moderators.items() if m.level == "study"]
    if study_level:
        rows = rows.merge(dataset.studies[["study", *study_level]], on="study", how="left", validate="many_to_one")
    columns = [*KEY_COLUMNS, *dataset.moderators]
    return rows[columns].reset_index(drop=True)


def _comparison_rows(dataset: Dataset, outcome: str) -> pd.DataFrame:
    """Key columns and comparison-level moderators of the comparisons of ``outcome``, in effect-table order."""
    comparison_level = [n for n, m in dataset.moderators.items() if m.level == "comparison"]
    if dataset.arms is not None:
        pairs = comparison_pairs(dataset.arms)
        pairs = pairs[pairs["outcome"] == outcome]
        return pd.DataFrame(
            {"study": pairs["study"], "arm": pairs["arm"], "control_arm": pairs["control"]}
            | {name: pairs[name] for name in comparison_level}
        )
    effects = dataset.effects
    effects = effects[effects["outcome"] == outcome]
    return pd.DataFrame(
        {"study": effects["study"], "arm": effects["comparison"], "control_arm": ""}
        | {name: effects[name] for name in comparison_level}
    )


def varies_within_studies(table: pd.DataFrame, name: str) -> bool:
    """Whether moderator ``name`` takes more than one value within some study of a comparison table.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`comparison_table` (any table with ``study`` and ``name`` columns).
    name : str
        Moderator column.

    Returns
    -------
    bool
        False for a study-level moderator (constant within every study by construction) and for
        a comparison-level one that happens to be constant within every study; True otherwise.
    """
    if name not in table.columns:
        raise ValueError(f"no column {name!r} in the comparison table; columns: {', '.join(table.columns)}")
    return bool(table.groupby("study", sort=False)[name].nunique(dropna=False).gt(1).any())
