"""Validate a dataset folder against the data contract (DESIGN.md §2, data/README.md).

Every problem is collected, each located by file, line and column; nothing is written.
"""

from __future__ import annotations

from pathlib import Path

from analysis.dataset.measures import ARM_MEASURES, measure_problems
from analysis.dataset.problems import Problem, errors
from analysis.dataset.read import TOML_NAME, RawDataset, read_raw
from analysis.dataset.validate_meta import check_comparison_moderators, check_meta, check_studies
from analysis.dataset.validate_rows import (
    arm_values,
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
    measure = meta.get("effect_measure", "SMD") if meta is not None else "SMD"
    if raw.arms is not None and isinstance(measure, str) and measure not in ARM_MEASURES:
        problems.append(
            Problem(
                "error",
                TOML_NAME,
                None,
                "effect_measure",
                f"arm-level data (arms.csv) give {', '.join(map(repr, ARM_MEASURES))}; got {measure!r}",
            )
        )
    if raw.arms is not None:
        row_problems = check_arms(raw.arms, study_ids, outcome_ids)
        problems += row_problems
        if not errors(row_problems):
            problems += suspicious_arms(raw.arms)
            directions = _directions(meta)
            if measure in ARM_MEASURES and directions is not None:
                problems += measure_problems(arm_values(raw.arms), measure, directions)
    if raw.effects is not None:
        problems += check_effects(raw.effects, study_ids, outcome_ids)
    problems += check_comparison_moderators(meta, raw.arms, raw.effects)
    if not errors(problems):
        problems += unused_data_warnings(raw)
    return problems


def _directions(meta: dict | None) -> dict[str, int] | None:
    """Outcome id -> direction, or None unless every declared direction is valid (errors reported elsewhere)."""
    outcomes = None if meta is None else meta.get("outcomes")
    if not isinstance(outcomes, dict):
        return None
    directions = {oid: spec.get("direction") if isinstance(spec, dict) else None for oid, spec in outcomes.items()}
    ok = all(d in (1, -1) and not isinstance(d, bool) for d in directions.values())
    return directions if ok else None


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
