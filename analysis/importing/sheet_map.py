"""The map of ``evmeta import comparisons``: which sheet column is what, and what the dataset declares.

A map is a TOML file (documented in data/README.md, "Importing a comparison sheet"); every table
is optional::

    [dataset]             name, title, provenance, citation, licence, source, notes, effect_measure
    [rows]                missing = ["", "NA"] (cells read as empty), unusable = "error" | "drop"
    [columns]             evmeta role = sheet column (study, outcome, mean_t, sd_t, sem_t, n_t, ...)
    [outcomes.<ID>]       label, unit, direction (1 | -1), value (the sheet's outcome cell; default <ID>);
                          [outcomes.<ID>.published] is copied to dataset.toml as it is (a published result)
    [moderators.<name>]   column, type, reference, levels, mixed: a study-level moderator (studies.csv);
                          level = "comparison": the [comparison_columns] column <name> is a moderator
    [study_columns]       name = column: other study-level columns of studies.csv
    [comparison_columns]  name = column: comparison-level columns of the treatment rows of arms.csv
    [risk_of_bias]        values = {sheet answer = low/high/unclear}; [risk_of_bias.domains] domain = column
    [control]             key = [columns]: rows of a study and outcome with equal cells share a control
    [[drop]]              column, values = [...] or missing = true, reason: rows left out (and counted)

A column may be given as a name or as a table ``{column, pattern, values}``: a regular expression
whose first group (or whole match) is kept, then a mapping of values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from analysis.dataset.problems import Problem
from analysis.dataset.read import read_toml

MAP_NAME = "import.toml"
#: evmeta's names for the three arms of a comparison row: mean, SD, SEM, n.
ARM_ROLES = {
    "treatment": ("mean_t", "sd_t", "sem_t", "n_t"),
    "control": ("mean_c", "sd_c", "sem_c", "n_c"),
    "sham": ("sham_mean", "sham_sd", "sham_sem", "sham_n"),
}
#: Every column role of ``[columns]`` (the default sheet column name of each is the role itself).
ROLES = ("study", "outcome", "comparison", "control", "unit", *(r for side in ARM_ROLES.values() for r in side))
REQUIRED_ROLES = ("study", "mean_t", "n_t", "mean_c", "n_c")
DEFAULT_MISSING = ("", "NA")
TABLES = (
    "dataset",
    "rows",
    "columns",
    "outcomes",
    "moderators",
    "study_columns",
    "comparison_columns",
    "risk_of_bias",
    "control",
    "drop",
)
DATASET_KEYS = ("name", "title", "provenance", "citation", "licence", "source", "notes", "effect_measure")
_SPEC_KEYS = ("column", "pattern", "values")


@dataclass(frozen=True)
class ColumnSpec:
    """A sheet column and how its cells are rewritten: ``pattern`` (group 1 or the match), then ``values``."""

    column: str
    pattern: re.Pattern | None = None
    values: dict[str, str] = field(default_factory=dict)

    def apply(self, cell: str) -> str | None:
        """The rewritten cell; None when a non-empty cell does not match ``pattern``."""
        if cell and self.pattern is not None:
            match = self.pattern.search(cell)
            if match is None:
                return None
            cell = (match.group(1) if self.pattern.groups else match.group(0)) or ""
        return self.values.get(cell, cell)


@dataclass(frozen=True)
class DropRule:
    """Drop the rows whose ``column`` cell is one of ``values`` (or empty, with ``missing``), for ``reason``."""

    column: str
    values: frozenset[str]
    missing: bool
    reason: str

    def matches(self, cells: dict[str, str]) -> bool:
        """Whether a row (cells with missing values already emptied) is dropped by this rule."""
        cell = cells.get(self.column, "")
        return cell in self.values or (self.missing and cell == "")


@dataclass(frozen=True)
class ImportMap:
    """A parsed map (see the module docstring); the empty map means the default column names."""

    dataset: dict[str, str] = field(default_factory=dict)
    columns: dict[str, ColumnSpec] = field(default_factory=dict)
    outcomes: dict[str, dict] = field(default_factory=dict)
    moderators: dict[str, dict] = field(default_factory=dict)
    study_columns: dict[str, ColumnSpec] = field(default_factory=dict)
    comparison_columns: dict[str, ColumnSpec] = field(default_factory=dict)
    rob: dict[str, ColumnSpec] = field(default_factory=dict)
    control_key: tuple[str, ...] = ()
    drops: tuple[DropRule, ...] = ()
    missing: frozenset[str] = frozenset(DEFAULT_MISSING)
    unusable: str = "error"

    def study_moderators(self) -> dict[str, dict]:
        """The study-level moderators (columns of studies.csv)."""
        return {k: m for k, m in self.moderators.items() if m.get("level", "study") == "study"}

    def comparison_moderators(self) -> dict[str, dict]:
        """The comparison-level moderators (``[comparison_columns]`` of the treatment rows of arms.csv)."""
        return {k: m for k, m in self.moderators.items() if m.get("level", "study") == "comparison"}

    def sheet_columns(self) -> dict[str, str]:
        """Map key -> sheet column, for every column the map names (to check they exist)."""
        used = {f"columns.{r}": s.column for r, s in self.columns.items()}
        used |= {f"study_columns.{k}": s.column for k, s in self.study_columns.items()}
        used |= {f"comparison_columns.{k}": s.column for k, s in self.comparison_columns.items()}
        used |= {f"moderators.{k}": m["source"].column for k, m in self.moderators.items() if "source" in m}
        used |= {f"risk_of_bias.domains.{k}": s.column for k, s in self.rob.items()}
        used |= {f"control.key[{i}]": c for i, c in enumerate(self.control_key)}
        return used | {f"drop[{i}]": r.column for i, r in enumerate(self.drops)}


class _Parser:
    """Collects located problems (``import.toml [key]: message``) while parsing one map."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.problems: list[Problem] = []

    def error(self, key: str, message: str) -> None:
        self.problems.append(Problem("error", self.name, None, key, message))

    def table(self, raw: dict, key: str) -> dict:
        value = raw.get(key, {})
        if isinstance(value, dict):
            return value
        self.error(key, "must be a table")
        return {}

    def spec(self, value: str | dict, key: str, default: str) -> ColumnSpec:
        """A column spec from a name or a table ``{column, pattern, values}``."""
        if isinstance(value, str):
            return ColumnSpec(value)
        if not isinstance(value, dict):
            self.error(key, "must be a column name or a table {column, pattern, values}")
            return ColumnSpec(default)
        column, values, pattern = value.get("column", default), value.get("values", {}), None
        if not isinstance(column, str) or not column:
            self.error(f"{key}.column", "must be the name of a sheet column")
            column = default
        try:
            pattern = re.compile(value["pattern"]) if "pattern" in value else None
        except (re.error, TypeError) as exc:
            self.error(f"{key}.pattern", f"not a regular expression ({exc})")
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            self.error(f"{key}.values", "must be a table of sheet value = new value (strings)")
            values = {}
        return ColumnSpec(column, pattern, dict(values))

    def specs(self, table: dict, key: str) -> dict[str, ColumnSpec]:
        return {k: self.spec(v, f"{key}.{k}", default=k) for k, v in table.items()}

    def moderators(self, table: dict, comparison_columns: dict) -> dict[str, dict]:
        """Moderators; a study-level one gets its column spec as ``source``, a comparison-level one none."""
        out = {}
        for name, spec in table.items():
            key = f"moderators.{name}"
            if not isinstance(spec, dict) or spec.get("type") not in ("categorical", "numeric"):
                self.error(f"{key}.type", 'must be "categorical" or "numeric"')
                continue
            if spec.get("level", "study") == "comparison":
                out[name] = self.comparison_moderator(name, spec, comparison_columns)
                continue
            if spec.get("level", "study") != "study":
                self.error(f"{key}.level", f'must be "study" (the default) or "comparison", got {spec["level"]!r}')
            if not isinstance(spec.get("mixed", ""), str):
                self.error(f"{key}.mixed", "must be a string: the level of studies with several values")
            source = self.spec({k: v for k, v in spec.items() if k in _SPEC_KEYS}, key, default=name)
            out[name] = {**spec, "source": source}
        return out

    def comparison_moderator(self, name: str, spec: dict, comparison_columns: dict) -> dict:
        """A comparison-level moderator: the ``[comparison_columns]`` entry of the same name gives its column."""
        key = f"moderators.{name}"
        if name not in comparison_columns:
            self.error(key, f"a comparison-level moderator needs a [comparison_columns] entry {name!r} (its column)")
        for extra in sorted(set(spec) & {*_SPEC_KEYS, "mixed"}):
            self.error(
                f"{key}.{extra}",
                "not used by a comparison-level moderator: give its column, pattern and values in [comparison_columns]",
            )
        return spec

    def outcomes(self, table: dict) -> dict[str, dict]:
        out = {}
        for oid, spec in table.items():
            direction = spec.get("direction") if isinstance(spec, dict) else None
            if isinstance(direction, bool) or direction not in (1, -1):
                self.error(f"outcomes.{oid}.direction", "required: 1 if higher is better, -1 if lower is better")
            else:
                out[oid] = spec
        return out

    def drops(self, rules: list) -> tuple[DropRule, ...]:
        out = []
        for i, rule in enumerate(rules if isinstance(rules, list) else [None]):
            ok = isinstance(rule, dict) and isinstance(rule.get("column"), str) and isinstance(rule.get("reason"), str)
            values = rule.get("values", []) if ok else None
            if not ok or not isinstance(values, list) or not (values or rule.get("missing") is True):
                self.error(f"drop[{i}]", "a [[drop]] rule needs column, reason, and values = [...] or missing = true")
                continue
            out.append(
                DropRule(rule["column"], frozenset(map(str, values)), rule.get("missing") is True, rule["reason"])
            )
        return tuple(out)

    def strings(self, value: list, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        self.error(key, "must be a list of strings")
        return default


def parse_map(raw: dict, name: str = MAP_NAME) -> tuple[ImportMap, list[Problem]]:
    """Check a map (its TOML document) and parse it; return it with every problem found."""
    p = _Parser(name)
    for key in raw:
        if key not in TABLES:
            p.error(key, f"unknown table; known: {', '.join(TABLES)}")
    dataset = p.table(raw, "dataset")
    for key, value in dataset.items():
        if key not in DATASET_KEYS or not isinstance(value, str):
            p.error(f"dataset.{key}", f"must be a string, one of {', '.join(DATASET_KEYS)}")
    columns = p.specs(p.table(raw, "columns"), "columns")
    for role in columns:
        if role not in ROLES:
            p.error(f"columns.{role}", f"unknown column role; known: {', '.join(ROLES)}")
    rows, rob = p.table(raw, "rows"), p.table(raw, "risk_of_bias")
    if rows.get("unusable", "error") not in ("error", "drop"):
        p.error("rows.unusable", 'must be "error" (the default) or "drop"')
    rob_values = rob.get("values", {}) if isinstance(rob.get("values", {}), dict) else {}
    domains = p.specs(p.table(rob, "domains"), "risk_of_bias.domains")
    comparison_columns = p.specs(p.table(raw, "comparison_columns"), "comparison_columns")
    parsed = ImportMap(
        dataset={k: v for k, v in dataset.items() if k in DATASET_KEYS and isinstance(v, str)},
        columns={r: s for r, s in columns.items() if r in ROLES},
        outcomes=p.outcomes(p.table(raw, "outcomes")),
        moderators=p.moderators(p.table(raw, "moderators"), comparison_columns),
        study_columns=p.specs(p.table(raw, "study_columns"), "study_columns"),
        comparison_columns=comparison_columns,
        rob={d: ColumnSpec(s.column, s.pattern, {**rob_values, **s.values}) for d, s in domains.items()},
        control_key=p.strings(p.table(raw, "control").get("key", []), "control.key", ()),
        drops=p.drops(raw.get("drop", [])),
        missing=frozenset(p.strings(rows.get("missing", list(DEFAULT_MISSING)), "rows.missing", DEFAULT_MISSING)),
        unusable=str(rows.get("unusable", "error")),
    )
    return parsed, p.problems


def read_map(path: Path | None, problems: list[Problem]) -> tuple[ImportMap, bytes | None]:
    """Read and parse a map file (None: the empty map); return it with its bytes, to be kept with the dataset."""
    if path is None:
        return ImportMap(), None
    raw = read_toml(path, problems)
    if raw is None:
        return ImportMap(), None
    plan, found = parse_map(raw, path.name)
    problems += found
    return plan, path.read_bytes()
