"""Checks of ``dataset.toml`` and ``studies.csv`` (the dataset's declarations and study table).

Moderators are study-level (``level = "study"``, the default: a column of ``studies.csv``) or
comparison-level (``level = "comparison"``: a column of the treatment rows of ``arms.csv``, or of
every row of ``effects.csv``); :func:`check_comparison_moderators` checks the latter.
"""

from __future__ import annotations

import re

import pandas as pd

from analysis.dataset.problems import Problem
from analysis.dataset.read import (
    ARMS_NAME,
    EFFECTS_NAME,
    STUDIES_NAME,
    TOML_NAME,
    csv_line,
    header_line,
    parse_number,
)

PROVENANCES = ("extracted", "simulated", "published-example")
MODERATOR_TYPES = ("categorical", "numeric")
#: Where a moderator's values are: a column of studies.csv, or of the comparison rows (arms.csv treatment rows).
MODERATOR_LEVELS = ("study", "comparison")
#: Columns with a meaning of their own in arms.csv / effects.csv, or keys of the comparison table
#: (:func:`analysis.dataset.moderators.comparison_table`): not usable as comparison-level moderator names.
RESERVED_COMPARISON_COLUMNS = (
    "study",
    "arm",
    "role",
    "outcome",
    "mean",
    "sd",
    "sem",
    "n",
    "control_arm",
    "comparison",
    "yi",
    "vi",
    "sei",
    "ci_lower",
    "ci_upper",
    "ci_level",
    "n_treatment",
    "n_control",
)
ROB_VALUES = ("low", "high", "unclear")
REQUIRED_META = ("name", "title", "provenance", "citation")
#: Characters an outcome id may not contain: it names output files (``forest_<ID>.png``, ``<ID>.nc``).
_UNSAFE_ID = re.compile(r"[/\\\x00-\x1f\x7f]")


def _toml_problem(key: str, message: str) -> Problem:
    return Problem("error", TOML_NAME, None, key, message)


def check_meta(meta: dict) -> list[Problem]:
    """Check the top-level keys and the outcome and moderator tables of ``dataset.toml``."""
    problems = [_toml_problem(k, "required key missing") for k in REQUIRED_META if k not in meta]
    for key in REQUIRED_META:
        if key in meta and not isinstance(meta[key], str):
            problems.append(_toml_problem(key, "must be a string"))
    if isinstance(meta.get("provenance"), str) and meta["provenance"] not in PROVENANCES:
        problems.append(_toml_problem("provenance", f"must be one of {', '.join(PROVENANCES)}"))
    if not isinstance(meta.get("effect_measure", "SMD"), str):
        problems.append(_toml_problem("effect_measure", "must be a string"))
    outcomes = meta.get("outcomes")
    if not isinstance(outcomes, dict) or not outcomes:
        problems.append(_toml_problem("outcomes", "at least one [outcomes.<ID>] table is required"))
    else:
        for oid, spec in outcomes.items():
            problems += _check_outcome_id(oid) + _check_outcome(oid, spec)
    moderators = meta.get("moderators", {})
    if not isinstance(moderators, dict):
        problems.append(_toml_problem("moderators", "must be a table of [moderators.<name>] tables"))
    else:
        for name, spec in moderators.items():
            problems += _check_moderator(name, spec)
    return problems


def _check_outcome_id(oid: str) -> list[Problem]:
    """Outcome ids name output files and must match CSV cells (which are stripped)."""
    if oid and oid == oid.strip() and oid not in (".", "..") and not _UNSAFE_ID.search(oid):
        return []
    return [
        _toml_problem(
            f"outcomes.{oid}",
            f"outcome id {oid!r} is not usable: it must be non-empty, without "
            "surrounding spaces, '/', '\\' or control characters (it names output files)",
        )
    ]


def _check_outcome(oid: str, spec: object) -> list[Problem]:
    key = f"outcomes.{oid}"
    if not isinstance(spec, dict):
        return [_toml_problem(key, "must be a table")]
    problems = []
    if not isinstance(spec.get("label", oid), str):
        problems.append(_toml_problem(f"{key}.label", "must be a string"))
    if not isinstance(spec.get("unit", ""), str):
        problems.append(_toml_problem(f"{key}.unit", "must be a string"))
    direction = spec.get("direction")
    if direction is None:
        problems.append(_toml_problem(f"{key}.direction", "required: 1 if higher is better, -1 if lower is better"))
    elif isinstance(direction, bool) or direction not in (1, -1):
        problems.append(_toml_problem(f"{key}.direction", f"must be 1 or -1, got {direction!r}"))
    if "published" in spec:
        problems += _check_published(f"{key}.published", spec["published"])
    return problems


#: Allowed values of the choice keys of ``[outcomes.<ID>.published]``.
PUBLISHED_CHOICES = {"method": ("REML", "DL", "HE"), "control_n": ("as-is", "split"), "scale": ("natural", "benefit")}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_published(key: str, spec: object) -> list[Problem]:
    """``[outcomes.<ID>.published]``: a published frequentist result to reproduce."""
    if not isinstance(spec, dict):
        return [_toml_problem(key, "must be a table")]
    problems = []
    if not isinstance(spec.get("source"), str):
        problems.append(_toml_problem(f"{key}.source", "required: where the published numbers are printed"))
    if not _is_number(spec.get("estimate")):
        problems.append(_toml_problem(f"{key}.estimate", "required: the published pooled estimate (a number)"))
    ci = spec.get("ci")
    if not (isinstance(ci, list) and len(ci) == 2 and all(_is_number(v) for v in ci) and ci[0] < ci[1]):
        problems.append(_toml_problem(f"{key}.ci", "required: [lower, upper] of the published 95% CI, lower < upper"))
    k = spec.get("k")
    if not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
        problems.append(_toml_problem(f"{key}.k", "required: the number of effects the paper pooled (an integer >= 1)"))
    if "i2" in spec and not (_is_number(spec["i2"]) and 0 <= spec["i2"] <= 100):
        problems.append(_toml_problem(f"{key}.i2", "must be a percentage between 0 and 100"))
    for name, allowed in PUBLISHED_CHOICES.items():
        if name in spec and spec[name] not in allowed:
            problems.append(_toml_problem(f"{key}.{name}", f"must be one of {', '.join(allowed)}, got {spec[name]!r}"))
    for name in ("digits", "i2_digits"):
        value = spec.get(name, 1)
        if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 6):
            problems.append(_toml_problem(f"{key}.{name}", "must be an integer from 0 to 6 (printed decimals)"))
    if "control_n_column" in spec and not isinstance(spec["control_n_column"], str):
        problems.append(_toml_problem(f"{key}.control_n_column", "must be the name of an arms.csv column"))
    known = {"source", "estimate", "ci", "k", "i2", "digits", "i2_digits", "control_n_column", *PUBLISHED_CHOICES}
    unknown = set(spec) - known
    problems += [_toml_problem(f"{key}.{name}", "unknown key") for name in sorted(unknown)]
    return problems


def _check_moderator(name: str, spec: object) -> list[Problem]:
    key = f"moderators.{name}"
    if not isinstance(spec, dict):
        return [_toml_problem(key, "must be a table")]
    kind = spec.get("type")
    if kind not in MODERATOR_TYPES:
        return [_toml_problem(f"{key}.type", f"must be one of {', '.join(MODERATOR_TYPES)}, got {kind!r}")]
    problems = []
    level = spec.get("level", "study")
    if level not in MODERATOR_LEVELS:
        problems.append(
            _toml_problem(
                f"{key}.level",
                f'must be "study" (a column of studies.csv, the default) or "comparison" (a column of the '
                f"comparison rows), got {level!r}",
            )
        )
    elif level == "comparison" and name in RESERVED_COMPARISON_COLUMNS:
        problems.append(
            _toml_problem(
                key, f"{name!r} is a column with its own meaning: name the comparison-level moderator otherwise"
            )
        )
    if kind == "categorical":
        if not isinstance(spec.get("reference"), str):
            problems.append(_toml_problem(f"{key}.reference", "categorical moderators need a reference level"))
        levels = spec.get("levels")
        if levels is not None and not (isinstance(levels, list) and all(isinstance(v, str) for v in levels)):
            problems.append(_toml_problem(f"{key}.levels", "must be a list of strings"))
        elif levels is not None and spec.get("reference") not in levels:
            problems.append(_toml_problem(f"{key}.reference", "reference level is not among the declared levels"))
    return problems


def _declared(meta: dict | None, level: str) -> dict[str, dict]:
    """Moderator tables of ``dataset.toml`` at ``level`` (tables with an invalid ``level`` are in neither)."""
    moderators = (meta or {}).get("moderators", {})
    if not isinstance(moderators, dict):
        return {}
    return {
        name: spec
        for name, spec in moderators.items()
        if isinstance(spec, dict) and spec.get("level", "study") == level
    }


def check_studies(studies: pd.DataFrame, meta: dict | None) -> list[Problem]:
    """Check ``studies.csv``: ids, declared study-level moderators (type and levels) and risk-of-bias cells."""
    if "study" not in studies.columns:
        return [Problem("error", STUDIES_NAME, header_line(studies), "study", "required column missing")]
    if studies.empty:
        return [Problem("error", STUDIES_NAME, None, None, "no data rows (one row per study is required)")]
    problems = []
    for idx, sid in studies["study"].items():
        if sid == "":
            problems.append(Problem("error", STUDIES_NAME, csv_line(idx), "study", "missing study id"))
    dup = studies["study"].duplicated(keep="first") & (studies["study"] != "")
    for idx in studies.index[dup]:
        problems.append(
            Problem("error", STUDIES_NAME, csv_line(idx), "study", f"duplicated study id {studies.at[idx, 'study']!r}")
        )
    for name, spec in _declared(meta, "study").items():
        problems += _check_moderator_column(studies, name, spec)
    for col in [c for c in studies.columns if c.startswith("rob_")]:
        for idx, value in studies[col].items():
            if value.lower() not in ROB_VALUES:
                problems.append(
                    Problem(
                        "error",
                        STUDIES_NAME,
                        csv_line(idx),
                        col,
                        f"risk of bias must be low/high/unclear, got {value!r}",
                    )
                )
    return problems


def _check_moderator_column(
    table: pd.DataFrame, name: str, spec: dict, file: str = STUDIES_NAME, unit: str = "study"
) -> list[Problem]:
    """Every row of ``table`` has a value of moderator ``name`` of its declared type and levels."""
    if name not in table.columns:
        return [Problem("error", file, header_line(table), name, f"declared moderator {name!r} has no column")]
    problems = []
    levels = spec.get("levels") if isinstance(spec.get("levels"), list) else None
    for idx, value in table[name].items():
        line = csv_line(idx)
        if value == "":
            problems.append(Problem("error", file, line, name, "missing moderator value"))
        elif spec.get("type") == "numeric" and parse_number(value) is None:
            problems.append(Problem("error", file, line, name, f"numeric moderator has non-numeric value {value!r}"))
        elif spec.get("type") == "categorical" and levels is not None and value not in levels:
            problems.append(Problem("error", file, line, name, f"level {value!r} not in declared levels {levels}"))
    if spec.get("type") == "categorical":
        present = set(table[name]) - {""}
        if len(present) > 1 and spec.get("reference") not in present:
            problems.append(
                Problem("warning", file, None, name, f"reference level {spec.get('reference')!r} occurs in no {unit}")
            )
    return problems


def check_comparison_moderators(
    meta: dict | None, arms: pd.DataFrame | None, effects: pd.DataFrame | None
) -> list[Problem]:
    """Check the comparison-level moderators (``level = "comparison"``) declared in ``dataset.toml``.

    Parameters
    ----------
    meta : dict or None
        ``dataset.toml`` as read.
    arms, effects : pandas.DataFrame or None
        ``arms.csv`` or ``effects.csv`` as read (raw text cells).

    Returns
    -------
    list of Problem
        Arm-level data: the moderator is a column of ``arms.csv`` with a value on every treatment
        row (type and levels as for study-level moderators, located ``arms.csv:LINE [name]``); a
        value on a control or sham row is ignored, with a warning. Effect-level data: a column of
        ``effects.csv`` with a value on every row. Nothing is checked when the rows lack the
        columns that identify them (``role``; reported by the row checks).
    """
    declared = _declared(meta, "comparison")
    if not declared:
        return []
    if arms is not None and "role" in arms.columns:
        treatment = arms[arms["role"] == "treatment"]
        others = arms[arms["role"] != "treatment"]
        problems = []
        for name, spec in declared.items():
            problems += _check_moderator_column(treatment, name, spec, ARMS_NAME, "comparison")
            if name in arms.columns:
                problems += [
                    Problem(
                        "warning",
                        ARMS_NAME,
                        csv_line(idx),
                        name,
                        f"comparison-level moderator {name!r} is read from the treatment rows: "
                        f"the value {value!r} on this {others.at[idx, 'role']} row is ignored",
                    )
                    for idx, value in others[name].items()
                    if value != ""
                ]
        return problems
    if effects is not None:
        return [
            p
            for name, spec in declared.items()
            for p in _check_moderator_column(effects, name, spec, EFFECTS_NAME, "comparison")
        ]
    return []
