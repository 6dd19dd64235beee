"""Import a comparison sheet (one row per treatment-vs-control comparison) as an evmeta dataset.

Extraction sheets of preclinical reviews (SyRF/CAMARADES practice) put the treatment and the
control group of a comparison side by side on one row. :func:`import_comparisons` turns such a
CSV or XLSX sheet into a dataset folder, guided by an optional map (:mod:`analysis.importing.sheet_map`;
data/README.md, "Importing a comparison sheet"):

* rows of one study and outcome whose control group is the same (an explicit ``control`` id, or
  equal cells in the map's ``[control] key`` columns) become ONE control arm compared with several
  treatment arms; their control numbers must agree, or it is a located error;
* every arm keeps the sheet row(s) it comes from in ``source`` (``sheet.xlsx:row 17``);
* an arm's SD is used where given, its SEM otherwise;
* study-level columns (moderators, ``rob_*``) must be constant within a study, unless the map names
  a ``mixed`` level for a moderator; comparison-level columns go to the treatment rows of arms.csv,
  and a comparison-level moderator (``level = "comparison"``) needs a value in every kept row;
* a row is dropped only by a ``[[drop]]`` rule, because all its cells are empty, or (with ``[rows]
  unusable = "drop"``) because its numbers are unusable; each is counted with its reason in the
  report, in ``dataset.toml`` and, row by row, in ``import_notes.md``.

Every problem is reported as ``file:row [column]: message``. The dataset is written to a staging
folder, checked with :func:`analysis.dataset.validate.validate_dataset` and moved into place only
if it has no error: nothing is written on error.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from analysis.atomic import staged_directory, write_bytes_atomic, write_text_atomic
from analysis.dataset.problems import DatasetError, Problem, errors, warnings_of
from analysis.dataset.read import ARMS_NAME, STUDIES_NAME, TOML_NAME, csv_line, parse_integer, parse_number, read_sheet
from analysis.dataset.validate import validate_dataset
from analysis.dataset.validate_meta import ROB_VALUES
from analysis.dataset.validate_rows import MAX_N
from analysis.importing.sheet_map import ARM_ROLES, MAP_NAME, REQUIRED_ROLES, ROLES, ColumnSpec, ImportMap, read_map

__all__ = ["DroppedRow", "ImportReport", "import_comparisons"]

NOTES_NAME = "import_notes.md"
ARM_COLUMNS = ["study", "arm", "role", "outcome", "mean", "sd", "sem", "n", "control_arm", "unit", "source"]
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _error(file: str, line: int | None, column: str | None, message: str) -> Problem:
    return Problem("error", file, line, column, message)


@dataclass(frozen=True)
class ArmCells:
    """One arm of a row as text cells: ``mean``, exactly one of ``sd``/``sem``, and ``n``."""

    mean: str
    sd: str
    sem: str
    n: str

    def numbers(self) -> dict[str, float]:
        """The values to compare between rows sharing the arm."""
        return {"mean": float(self.mean), "sd" if self.sd else "sem": float(self.sd or self.sem), "n": int(self.n)}


@dataclass(frozen=True)
class Comparison:
    """A kept sheet row: a treatment arm, its (possibly shared) control arm and maybe a sham arm."""

    line: int
    study: str
    outcome: str
    arm: str
    arms: dict[str, ArmCells]
    control: str
    group: tuple[str, ...]
    cells: dict[str, str]


@dataclass(frozen=True)
class DroppedRow:
    """A sheet row left out of the dataset: its row number, reason (counted) and detail."""

    line: int
    reason: str
    detail: str


@dataclass(frozen=True)
class ImportReport:
    """What :func:`import_comparisons` did.

    Attributes
    ----------
    source : str
        File name of the sheet.
    out_dir : pathlib.Path
        The dataset folder written.
    rows_read : int
        Data rows of the sheet (blank lines of a CSV file and empty rows of a workbook are not rows).
    dropped : tuple of DroppedRow
        Rows left out, each with its reason; :meth:`dropped_by_reason` counts them.
    studies : int
        Rows of ``studies.csv``.
    control_groups : int
        Control arms written (rows sharing a control group give one).
    comparisons : dict of str to int
        Outcome id -> treatment arms (comparisons).
    mixed : dict of str to list of str
        Moderator -> studies given its ``mixed`` level (several values within the study).
    assumed_directions : tuple of str
        Outcomes not declared in a map: direction 1 (higher is better) was assumed.
    warnings : tuple of Problem
        Warnings of ``evmeta validate`` on the written dataset.
    """

    source: str
    out_dir: Path
    rows_read: int
    dropped: tuple[DroppedRow, ...]
    studies: int
    control_groups: int
    comparisons: dict[str, int]
    mixed: dict[str, list[str]] = field(default_factory=dict)
    assumed_directions: tuple[str, ...] = ()
    warnings: tuple[Problem, ...] = ()

    @property
    def rows_kept(self) -> int:
        """Rows that became comparisons."""
        return self.rows_read - len(self.dropped)

    def dropped_by_reason(self) -> dict[str, int]:
        """Reason -> rows dropped for it, in order of first occurrence."""
        return dict(Counter(d.reason for d in self.dropped))

    def summary(self) -> str:
        """Rows read, kept and dropped (by reason), studies, control groups, comparisons per outcome."""
        reasons = "; ".join(f"{n} {r}" for r, n in self.dropped_by_reason().items())
        text = (
            f"{self.rows_read} rows read from {self.source}, {self.rows_kept} kept, {len(self.dropped)} dropped"
            + (f" ({reasons})" if reasons else "")
            + f"; {self.studies} studies, {self.control_groups} control groups; comparisons per outcome: "
            + ", ".join(f"{o} {n}" for o, n in self.comparisons.items())
            + "."
        )
        for name, studies in self.mixed.items():
            if studies:
                several = f"{len(studies)} {'study' if len(studies) == 1 else 'studies'} with several values"
                text += f" Moderator {name}: {several}, given its mixed level."
        if self.assumed_directions:
            text += f" Direction 1 (higher is better) ASSUMED for {', '.join(self.assumed_directions)}."
        return text

    def __str__(self) -> str:
        return f"wrote {self.out_dir}: {self.summary()}"


# --------------------------------------------------------------------------- rows


def _arm_cells(
    values: dict[str, str], specs: dict[str, ColumnSpec], side: str
) -> tuple[ArmCells | None, list[tuple[str, str]]]:
    """One arm (treatment, control or sham) from a row's role values, or why it is unusable (role, message)."""
    mean_r, sd_r, sem_r, n_r = ARM_ROLES[side]
    mean, sd, sem, n = (values.get(r, "") for r in ARM_ROLES[side])
    found = []
    if parse_number(mean) is None:
        found.append((mean_r, "no mean" if mean == "" else "the mean is not a number", mean))
    if not (sd or sem):
        found.append((sd_r if sd_r in specs else sem_r, "no SD or SEM", ""))
    elif (value := parse_number(sd or sem)) is None or value <= 0:
        found.append((sd_r if sd else sem_r, "the SD/SEM is not a positive number", sd or sem))
    count = parse_integer(n)
    if count is None or not 2 <= count <= MAX_N:
        found.append((n_r, "no n" if n == "" else f"n is not a whole number from 2 to {MAX_N:,}", n))
    if found:
        return None, [(r, f"{side} arm: {why}" + (f" ({specs[r].column} = {v!r})" if v else "")) for r, why, v in found]
    return ArmCells(mean, sd, "" if sd else sem, str(count)), []


def _outcome_of(value: str, plan: ImportMap, specs: dict[str, ColumnSpec]) -> str | None:
    """The declared outcome whose ``value`` (default: its id) is the row's outcome cell (or the only one)."""
    if "outcome" not in specs:
        return next(iter(plan.outcomes))
    return next((oid for oid, spec in plan.outcomes.items() if spec.get("value", oid) == value), None)


def _comparison(
    line: int, cells: dict[str, str], plan: ImportMap, specs: dict[str, ColumnSpec], source: str
) -> tuple[Comparison | None, list[Problem], bool]:
    """A row as a comparison, else its problems and whether they are unusable cells (droppable)."""
    where = {role: spec.column for role, spec in specs.items()}
    values = {role: spec.apply(cells.get(spec.column, "")) for role, spec in specs.items()}
    patterned = [(f"[columns] {r}", s.column, v) for (r, s), v in zip(specs.items(), values.values())]
    patterned += [
        (f"[comparison_columns] {n}", s.column, s.apply(cells.get(s.column, "")))
        for n, s in plan.comparison_columns.items()
    ]
    mismatched = [
        _error(source, line, c, f"does not match the map's pattern for {n}") for n, c, v in patterned if v is None
    ]
    if mismatched:
        return None, mismatched, False
    roles = {r: str(v) for r, v in values.items()}
    outcome = _outcome_of(roles.get("outcome", ""), plan, specs)
    if outcome is None and roles.get("outcome"):
        message = f"outcome {roles['outcome']!r} is not declared in the map's [outcomes] (or drop it: [[drop]])"
        return None, [_error(source, line, where["outcome"], message)], False
    found = [("study", "no study id")] if not roles["study"] else []
    found += [("outcome", "no outcome")] if outcome is None else []
    arms = {}
    has_sham = any(roles.get(r) for r in ARM_ROLES["sham"])
    for side in ("treatment", "control", "sham") if has_sham else ("treatment", "control"):
        arms[side], unusable = _arm_cells(roles, specs, side)
        found += unusable
    if found:
        return None, [_error(source, line, where.get(r, r), message) for r, message in found], True
    control = roles.get("control", "")
    group = (control, *(cells.get(c, "") for c in plan.control_key)) if control or plan.control_key else (f"{line}",)
    arm = roles.get("comparison") or f"row{line}"
    return Comparison(line, roles["study"], str(outcome), arm, arms, control, group, cells), [], False


def _row_pass(
    table: pd.DataFrame, plan: ImportMap, specs: dict[str, ColumnSpec], source: str
) -> tuple[list[Comparison], list[DroppedRow], list[Problem]]:
    """Drop, parse and check every row: kept comparisons, dropped rows (with reasons), located errors."""
    kept, dropped, problems = [], [], []
    hint = '; fix the cell, drop the row with a [[drop]] rule, or set [rows] unusable = "drop"'
    for idx, raw in zip(table.index, table.to_dict("records")):
        line = csv_line(idx)
        cells = {k: "" if v in plan.missing else v for k, v in raw.items()}
        rule = next((r for r in plan.drops if r.matches(cells)), None)
        if not any(cells.values()):
            dropped.append(DroppedRow(line, "every cell is empty or missing", ""))
        elif rule is not None:
            dropped.append(DroppedRow(line, rule.reason, f"{rule.column} = {raw.get(rule.column, '')!r}"))
        else:
            comparison, found, unusable = _comparison(line, cells, plan, specs, source)
            if comparison is not None:
                kept.append(comparison)
            elif unusable and plan.unusable == "drop":
                reason = found[0].message.split(" (")[0]
                dropped.append(DroppedRow(line, f"unusable: {reason}", "; ".join(p.message for p in found)))
            else:
                problems += [replace(p, message=p.message + hint) if unusable else p for p in found]
    return kept, dropped, problems


# --------------------------------------------------------------------------- tables


def _rows_text(lines: list[int], source: str) -> str:
    return f"{source}:row {lines[0]}" if len(lines) == 1 else f"{source}:rows {', '.join(map(str, lines))}"


def _shared_problems(members: list[Comparison], side: str, specs: dict[str, ColumnSpec], source: str) -> list[Problem]:
    """Rows sharing a control group must give the same control (and sham) numbers."""
    first = members[0]
    problems = []
    for m in members[1:]:
        if (side in m.arms) != (side in first.arms):
            problems.append(
                _error(
                    source,
                    m.line,
                    None,
                    f"shares its control group with row {first.line}, but only one of the two rows has a {side} arm",
                )
            )
            continue
        if side not in m.arms:
            continue
        ours, theirs = m.arms[side].numbers(), first.arms[side].numbers()
        for key, value in ours.items():
            if theirs.get(key) != value:
                role = dict(zip(("mean", "sd", "sem", "n"), ARM_ROLES[side]))[key]
                problems.append(
                    _error(
                        source,
                        m.line,
                        specs[role].column if role in specs else role,
                        f"shares its {side} group with row {first.line} (same study, outcome and control key) but "
                        f"gives {key} = {value} where that row gives {theirs.get(key, 'no ' + key)}: check the "
                        "extraction, or give the rows different control ids",
                    )
                )
                break
    return problems


def _arm_rows(
    ids: tuple[str, str], members: list[Comparison], plan: ImportMap, specs: dict[str, ColumnSpec], source: str
) -> list[dict[str, str]]:
    """arms.csv rows of one control group: the control arm, a sham arm if any, the treatment arms."""
    first = members[0]
    unit = specs.get("unit")
    base = {"study": first.study, "outcome": first.outcome, "source": _rows_text([m.line for m in members], source)}
    rows = []
    for side, arm in zip(("control", "sham"), ids):
        if side in first.arms:
            rows.append({**base, **_cells(first, side), "arm": arm, "role": side, "unit": _value(first, unit)})
    for m in members:
        extra = {name: _value(m, spec) for name, spec in plan.comparison_columns.items()}
        treatment = {**base, **_cells(m, "treatment"), "arm": m.arm, "role": "treatment", "control_arm": ids[0]}
        rows.append({**treatment, "unit": _value(m, unit), "source": _rows_text([m.line], source), **extra})
    return rows


def _cells(m: Comparison, side: str) -> dict[str, str]:
    arm = m.arms[side]
    return {"mean": arm.mean, "sd": arm.sd, "sem": arm.sem, "n": arm.n}


def _value(m: Comparison, spec: ColumnSpec | None) -> str:
    value = None if spec is None else spec.apply(m.cells.get(spec.column, ""))
    return value or ""


def _arms_table(
    kept: list[Comparison], plan: ImportMap, specs: dict[str, ColumnSpec], source: str
) -> tuple[list[dict[str, str]], int, list[Problem]]:
    """arms.csv rows, the number of control groups, and located problems (shared numbers, arm ids)."""
    groups: dict[tuple[str, str], dict[tuple[str, ...], list[Comparison]]] = {}
    for c in kept:
        groups.setdefault((c.study, c.outcome), {}).setdefault(c.group, []).append(c)
    rows, problems, n_groups = [], [], 0
    for by_group in groups.values():
        used: dict[str, int] = {}
        for k, members in enumerate(by_group.values(), start=1):
            n_groups += 1
            problems += [p for side in ("control", "sham") for p in _shared_problems(members, side, specs, source)]
            group_id = members[0].control or (f"control_{k}" if len(by_group) > 1 else "control")
            column = specs["comparison"].column if "comparison" in specs else None
            for arm, line in [(group_id, members[0].line)] + [(m.arm, m.line) for m in members]:
                if arm in used:
                    where = f"study {members[0].study!r}, outcome {members[0].outcome!r}"
                    problems.append(
                        _error(source, line, column, f"arm id {arm!r} used twice in {where} (row {used[arm]})")
                    )
                used.setdefault(arm, line)
            suffix = f"_{k}" if len(by_group) > 1 else ""
            sham_id = f"sham_{members[0].control}" if members[0].control else f"sham{suffix}"
            rows += _arm_rows((group_id, sham_id), members, plan, specs, source)
    return rows, n_groups, problems


def _study_column(
    kept: list[Comparison], name: str, spec: ColumnSpec, mixed: str | None, source: str
) -> tuple[dict[str, str], list[str], list[Problem]]:
    """Value of a study-level column per study, the studies given the ``mixed`` level, located problems."""
    values: dict[str, tuple[str, int]] = {}
    labelled, problems = [], []
    for m in kept:
        value = spec.apply(m.cells.get(spec.column, ""))
        if value is None:
            problems.append(_error(source, m.line, spec.column, f"does not match the map's pattern for {name}"))
        elif m.study not in values:
            values[m.study] = (value, m.line)
        elif values[m.study][0] != value and m.study not in labelled:
            labelled.append(m.study)
            if mixed is None:
                first, line = values[m.study]
                message = f"{name} is study-level but study {m.study!r} has {value!r} here and {first!r} at row {line}"
                hint = ": declare a mixed level for the moderator, or make it a comparison column"
                problems.append(_error(source, m.line, spec.column, message + hint))
    return {s: mixed if s in labelled and mixed is not None else v for s, (v, _) in values.items()}, labelled, problems


def _study_problems(
    kept: list[Comparison], name: str, values: dict[str, str], column: str, kind: str, source: str
) -> list[Problem]:
    """Moderators need a value in every study (a number if numeric); risk-of-bias cells low/high/unclear."""
    first = {m.study: m.line for m in reversed(kept)}
    if kind == "rob":
        bad = {
            s: f"is {v!r}, not low/high/unclear: map the sheet's answers in [risk_of_bias] values"
            for s, v in values.items()
            if v.lower() not in ROB_VALUES
        }
    else:
        bad = {
            s: "is missing" if v == "" else f"is not a number: {v!r}"
            for s, v in values.items()
            if v == "" or (kind == "numeric" and parse_number(v) is None)
        }
    return [_error(source, first[s], column, f"{name} of study {s!r} {why}") for s, why in bad.items()]


def _studies_table(
    kept: list[Comparison], plan: ImportMap, source: str
) -> tuple[list[dict[str, str]], dict[str, list[str]], list[Problem]]:
    """studies.csv rows, the studies given each moderator's ``mixed`` level, and located problems."""
    columns: dict[str, dict[str, str]] = {}
    mixed: dict[str, list[str]] = {}
    problems: list[Problem] = []
    wanted = [(name, spec, None, "") for name, spec in plan.study_columns.items()]
    wanted += [(name, m["source"], m.get("mixed"), m["type"]) for name, m in plan.study_moderators().items()]
    wanted += [(f"rob_{d}", spec, None, "rob") for d, spec in plan.rob.items()]
    for name, spec, level, kind in wanted:
        columns[name], labelled, found = _study_column(kept, name, spec, level, source)
        problems += found + (_study_problems(kept, name, columns[name], spec.column, kind, source) if kind else [])
        if name in plan.study_moderators():
            mixed[name] = labelled
    studies = dict.fromkeys(m.study for m in kept)
    return [{"study": s, **{c: v[s] for c, v in columns.items()}} for s in studies], mixed, problems


def _comparison_moderator_problems(kept: list[Comparison], plan: ImportMap, source: str) -> list[Problem]:
    """A comparison-level moderator needs a value in every kept row (a number if numeric)."""
    problems = []
    for name, mod in plan.comparison_moderators().items():
        spec = plan.comparison_columns.get(name)
        if spec is None:  # reported by the map's parser
            continue
        for m in kept:
            value = _value(m, spec)
            if value == "" or (mod["type"] == "numeric" and parse_number(value) is None):
                why = "is missing" if value == "" else f"is not a number: {value!r}"
                message = f"comparison-level moderator {name} {why} (fix the cell or drop the row: [[drop]])"
                problems.append(_error(source, m.line, spec.column, message))
    return problems


# --------------------------------------------------------------------------- output


def _csv_text(rows: list[dict[str, str]], header: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n", extrasaction="ignore", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _q(text: str) -> str:
    """A TOML basic string (JSON's string escapes are valid TOML)."""
    return json.dumps(text, ensure_ascii=False)


def _toml_value(value: str | int | float | list) -> str:
    """A TOML value for the pass-through ``published`` table (checked by the dataset validator)."""
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return _q(value) if isinstance(value, str) else repr(value)


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else _q(name)


def _toml_text(plan: ImportMap, studies: list[dict[str, str]], arms: list[dict[str, str]], summary: str) -> str:
    """dataset.toml: the map's [dataset] strings, the import summary, outcomes and moderators.

    A categorical moderator without a declared reference gets its most frequent level (over
    studies, or over comparisons for a comparison-level one); without declared levels, the
    reference then the other values sorted.
    """
    lines = [f"{k} = {_q(v)}" for k, v in plan.dataset.items()] + [f"import_summary = {_q(summary)}"]
    for oid, spec in plan.outcomes.items():
        lines += ["", f"[outcomes.{_key(oid)}]", f"label = {_q(str(spec.get('label', oid)))}"]
        lines += [f"unit = {_q(str(spec.get('unit', '')))}", f"direction = {int(spec['direction'])}"]
        if isinstance(spec.get("published"), dict):
            lines += ["", f"[outcomes.{_key(oid)}.published]"]
            lines += [f"{_key(k)} = {_toml_value(v)}" for k, v in spec["published"].items()]
    treatments = [a for a in arms if a["role"] == "treatment"]
    for name, mod in plan.moderators.items():
        lines += ["", f"[moderators.{_key(name)}]", f"type = {_q(mod['type'])}"]
        comparison = mod.get("level", "study") == "comparison"
        lines += ['level = "comparison"'] if comparison else []
        if mod["type"] == "categorical":
            counts = Counter(s[name] for s in (treatments if comparison else studies))
            reference = mod.get("reference") or sorted(counts, key=lambda v: (-counts[v], v))[0]
            levels = mod.get("levels") or [reference, *sorted(set(counts) - {reference})]
            lines += [f"reference = {_q(str(reference))}", "levels = [" + ", ".join(_q(str(v)) for v in levels) + "]"]
    return "\n".join(lines) + "\n"


def _notes_text(report: ImportReport, map_name: str | None) -> str:
    """import_notes.md: the summary and every dropped row with its reason."""
    lines = [f"# Import notes: {report.out_dir.name}", "", "Written by `evmeta import comparisons`.", ""]
    lines += [
        f"- sheet: `{report.source}`",
        f"- map: `{map_name}`" + ("" if map_name == MAP_NAME else f" (kept here as `{MAP_NAME}`)")
        if map_name
        else "- map: none",
    ]
    lines += ["", report.summary(), "", "## Dropped rows", ""] + ([] if report.dropped else ["None."])
    for reason, count in report.dropped_by_reason().items():
        lines += [f"### {reason} ({count} rows)", ""]
        lines += [
            f"- row {d.line}" + (f": {d.detail}" if d.detail else "") for d in report.dropped if d.reason == reason
        ]
        lines.append("")
    for name, studies in report.mixed.items():
        if studies:
            lines += ["", f"## Moderator `{name}`: studies with several values (given its mixed level)", ""]
            lines += [f"- {s}" for s in studies]
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- the importer


def _resolve(table: pd.DataFrame, plan: ImportMap, source: str) -> tuple[dict[str, ColumnSpec], list[Problem]]:
    """Column spec per role (mapped, or the default name when the sheet has it); problems for absent columns."""
    line = int(table.attrs.get("header_line", 1))
    specs = {r: plan.columns.get(r, ColumnSpec(r)) for r in ROLES if r in plan.columns or r in table.columns}
    problems = [
        _error(source, line, r, f"required column {r!r} not found: name the sheet's column in the map's [columns]")
        for r in REQUIRED_ROLES
        if r not in specs
    ]
    for side in ("treatment", "control"):
        if not any(r in specs for r in ARM_ROLES[side][1:3]):
            problems.append(
                _error(source, line, "/".join(ARM_ROLES[side][1:3]), f"the {side} arm needs an SD or an SEM column")
            )
    named = plan.sheet_columns()
    return specs, problems + [
        _error(source, line, column, f"no such column in the header (named by the map's {key})")
        for key, column in named.items()
        if column not in table.columns
    ]


def _outcomes(
    table: pd.DataFrame, plan: ImportMap, specs: dict[str, ColumnSpec], source: str
) -> tuple[dict[str, dict], tuple[str, ...], list[Problem]]:
    """Declared outcomes; without declarations, one per distinct outcome cell with direction 1 ASSUMED."""
    line = int(table.attrs.get("header_line", 1))
    if plan.outcomes and ("outcome" in specs or len(plan.outcomes) == 1):
        return plan.outcomes, (), []
    if plan.outcomes or "outcome" not in specs:
        why = "several outcomes are declared" if plan.outcomes else "no outcome is declared in a map"
        return {}, (), [_error(source, line, "outcome", f"{why} and the sheet has no outcome column")]
    values = [v for v in dict.fromkeys(table[specs["outcome"].column]) if v not in plan.missing]
    found = {
        re.sub(r"[^A-Za-z0-9_]+", "_", v).strip("_") or "outcome": {"value": v, "label": v, "direction": 1}
        for v in values
    }
    return found, tuple(found), []


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass --overwrite (overwrite=True) to replace it")


def import_comparisons(
    path: str | Path,
    out_dir: str | Path,
    *,
    columns: str | Path | None = None,
    sheet: str | None = None,
    encoding: str = "utf-8",
    overwrite: bool = False,
) -> ImportReport:
    """Import a comparison sheet (one treatment-vs-control comparison per row) as a dataset folder.

    Parameters
    ----------
    path : str or pathlib.Path
        The sheet: a CSV file or an XLSX workbook.
    out_dir : str or pathlib.Path
        Dataset folder to write: ``dataset.toml``, ``studies.csv``, ``arms.csv``, ``import_notes.md``
        and, with a map, a copy of it as ``import.toml``.
    columns : str or pathlib.Path, optional
        The map (TOML; :mod:`analysis.importing.sheet_map`, data/README.md "Importing a comparison sheet"):
        column names, outcomes and their directions, moderators, risk of bias, control key, drop
        rules, dataset metadata. Without it the default column names are used and every outcome
        gets direction 1, an assumption the report states.
    sheet : str, optional
        Worksheet of an XLSX workbook (default: the first).
    encoding : str, default "utf-8"
        Encoding of a CSV file, e.g. ``"latin-1"``.
    overwrite : bool, default False
        Replace an existing non-empty ``out_dir`` (the whole folder).

    Returns
    -------
    ImportReport
        Rows read, kept and dropped by reason; studies; control groups; comparisons per outcome;
        the warnings of ``evmeta validate`` on the written dataset.

    Raises
    ------
    DatasetError
        The sheet, the map or the dataset made of them has errors; ``.problems`` lists each one
        as ``file:row [column]: message``. Nothing is written.
    FileExistsError
        ``out_dir`` is not empty and ``overwrite`` is False.
    """
    path, out_dir = Path(path), Path(out_dir)
    map_path = None if columns is None else Path(columns)
    _check_target(out_dir, overwrite)
    problems: list[Problem] = []
    plan, map_bytes = read_map(map_path, problems)
    table = read_sheet(path, problems, sheet=sheet, encoding=encoding)
    if table is None or errors(problems):
        raise DatasetError(str(path), problems)
    specs, problems = _resolve(table, plan, path.name)
    outcomes, assumed, found = _outcomes(table, plan, specs, path.name)
    if errors(problems + found):
        raise DatasetError(str(path), problems + found)
    plan = replace(plan, outcomes=outcomes)
    kept, dropped, problems = _row_pass(table, plan, specs, path.name)
    arms, n_groups, found = _arms_table(kept, plan, specs, path.name)
    studies, mixed, found_studies = _studies_table(kept, plan, path.name)
    problems += found + found_studies + _comparison_moderator_problems(kept, plan, path.name)
    if not kept and not problems:
        problems.append(_error(path.name, None, None, "no row is left to import"))
    if errors(problems):
        raise DatasetError(str(path), problems)
    report = ImportReport(
        source=path.name,
        out_dir=out_dir,
        rows_read=len(table),
        dropped=tuple(sorted(dropped, key=lambda d: d.line)),
        studies=len(studies),
        control_groups=n_groups,
        comparisons={o: sum(c.outcome == o for c in kept) for o in outcomes},
        mixed=mixed,
        assumed_directions=assumed,
    )
    defaults = {"name": out_dir.name, "title": f"Imported from {path.name}", "provenance": "extracted"}
    defaults |= {"citation": f"not declared: imported from {path.name}", "effect_measure": "SMD"}
    plan = replace(plan, dataset=defaults | plan.dataset)
    texts = {
        TOML_NAME: _toml_text(plan, studies, arms, report.summary() + f" Row by row: {NOTES_NAME}."),
        STUDIES_NAME: _csv_text(studies, list(studies[0])),
        ARMS_NAME: _csv_text(arms, _arm_header(arms, plan)),
        NOTES_NAME: _notes_text(report, None if map_path is None else map_path.name),
    }
    return replace(report, warnings=tuple(_write(out_dir, texts, map_bytes)))


def _arm_header(arms: list[dict[str, str]], plan: ImportMap) -> list[str]:
    header = [c for c in ARM_COLUMNS if c != "unit" or any(r.get("unit") for r in arms)]
    return header + list(plan.comparison_columns)


def _write(out_dir: Path, texts: dict[str, str], map_bytes: bytes | None) -> list[Problem]:
    """Write the files into a staging folder, validate it, move it into place only if valid; return warnings."""
    with staged_directory(out_dir) as staging:
        for name, text in texts.items():
            write_text_atomic(staging / name, text)
        if map_bytes is not None:
            write_bytes_atomic(staging / MAP_NAME, map_bytes)
        problems = validate_dataset(staging)
        if errors(problems):
            raise DatasetError(str(out_dir), problems)
    return warnings_of(problems)
