"""Validate a dataset folder against the data contract (DESIGN.md §2, data/README.md).

Every problem is collected, each located by file, line and column; nothing is written.
"""

from __future__ import annotations

from pathlib import Path

from analysis.dataset.problems import Problem, errors
from analysis.dataset.read import TOML_NAME, RawDataset, read_raw
from analysis.dataset.validate_meta import check_meta, check_studies
from analysis.dataset.validate_rows import (
    check_arms,
    check_effects,
    suspicious_arms,
    unused_data_warnings,
)


def validate_raw(raw: RawDataset) -> list[Problem]:
    """Run every check on an already-read dataset and return all problems found.

    Parameters
    ----------
    raw : RawDataset
        Files of the dataset as read by :func:`analysis.dataset.read.read_raw`.

    Returns
    -------
    list of Problem
        Read problems first, then errors and warnings of each file in contract order; on a
        dataset without errors, last, warnings for data that contribute nothing (a study
        without data rows or without a treatment arm for an outcome, a declared outcome that
        no comparison reports).
    """
    problems = list(raw.problems)
    meta = raw.meta
    if meta is not None:
        problems += check_meta(meta)
    if raw.studies is not None:
        problems += check_studies(raw.studies, meta)
    study_ids = set(raw.studies["study"]) if raw.studies is not None and "study" in raw.studies else None
    outcomes = meta.get("outcomes") if meta is not None else None
    outcome_ids = set(outcomes) if isinstance(outcomes, dict) else None
    if raw.arms is not None and meta is not None and meta.get("effect_measure", "SMD") != "SMD":
        problems.append(
            Problem("error", TOML_NAME, None, "effect_measure", "arm-level data (arms.csv) give 'SMD' only")
        )
    if raw.arms is not None:
        row_problems = check_arms(raw.arms, study_ids, outcome_ids)
        problems += row_problems
        if not errors(row_problems):
            problems += suspicious_arms(raw.arms)
    if raw.effects is not None:
        problems += check_effects(raw.effects, study_ids, outcome_ids)
    if not errors(problems):
        problems += unused_data_warnings(raw)
    return problems


def validate_dataset(path: str | Path) -> list[Problem]:
    """Read and validate the dataset folder at ``path``; return every problem found.

    Parameters
    ----------
    path : str or pathlib.Path
        Dataset folder holding ``dataset.toml``, ``studies.csv`` and ``arms.csv`` or ``effects.csv``.

    Returns
    -------
    list of Problem
        Empty when the dataset is clean; check :func:`analysis.dataset.problems.errors` for fatal ones.
    """
    return validate_raw(read_raw(Path(path)))
