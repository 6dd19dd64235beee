"""Property-based tests of the dataset reader, validator and loader (GitHub issue 9).

Every dataset, however malformed, must end in one of two ways:

* **invalid**: ``validate_dataset`` returns errors, each a :class:`Problem` naming its file (and
  line and column where one applies); ``evmeta validate`` exits 1 and lists them on stderr;
  ``evmeta effects DATASET --out F`` exits 1 and writes nothing; ``load_dataset`` raises
  :class:`DatasetError`;
* **valid**: no row is dropped: ``load_dataset(...).arms`` (or ``.effects``) has exactly one row
  per data row of the CSV file, ``compute_effects`` gives one comparison per treatment row, and
  ``evmeta effects --out F`` writes exactly those rows.

Never a traceback: no exception other than ``DatasetError`` escapes ``validate_dataset``,
``load_dataset`` or ``analysis.cli.main``.

Valid datasets are generated from random structure (studies, outcomes, arms with SD or SEM,
several treatment arms sharing a control, several controls named in ``control_arm``, sham
arms, unicode ids, shuffled columns and rows, extra columns, blank lines, CRLF, BOM, quoting)
and then corrupted by one mutation from a catalogue (bad numbers, NaN/inf, n < 2, unknown
roles, undeclared outcomes, duplicated ids, missing columns, ragged rows, stray quotes,
latin-1/UTF-16/random bytes, empty or missing files, broken TOML...). A mutation that must be
an error says where, and the test checks the error is reported exactly there.

The default run uses small, derandomised budgets (a few seconds per test); the ``_slow``
twins (``-m slow``) explore many more random examples.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from analysis.cli import main
from analysis.dataset.effects import compute_effects
from analysis.dataset.load import load_dataset
from analysis.dataset.problems import DatasetError, Problem, errors
from analysis.dataset.validate import validate_dataset

FILES = ("dataset.toml", "studies.csv", "arms.csv", "effects.csv")
FAST = {
    "deadline": None,
    "database": None,
    "derandomize": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}
SLOW = {**FAST, "derandomize": False}

# --- the generated dataset --------------------------------------------------------------------


@dataclass
class Table:
    """A CSV file as structure; ``raw_rows`` maps a row index to literal text written instead."""

    header: list[str]
    rows: list[list[str]]
    raw_rows: dict[int, str] = field(default_factory=dict)

    def col(self, name: str) -> int:
        return self.header.index(name)

    def get(self, i: int, name: str) -> str:
        return self.rows[i][self.col(name)]

    def with_cell(self, i: int, name: str, value: str) -> Table:
        rows = [list(r) for r in self.rows]
        rows[i][self.col(name)] = value
        return replace(self, rows=rows)


@dataclass
class Layout:
    """How the CSV files are written (none of it may change their meaning)."""

    newline: str = "\n"
    bom: bool = False
    quote_all: bool = False
    blank_before: frozenset[int] = frozenset()


@dataclass
class Case:
    """A dataset folder to write, and what validating it must give."""

    toml: str
    studies: Table
    data_name: str  # "arms.csv" or "effects.csv"
    data: Table
    layout: Layout = field(default_factory=Layout)
    #: file name -> bytes written instead of the table (None: the file is removed)
    override: dict[str, bytes | None] = field(default_factory=dict)
    #: None: either outcome is fine; else whether an error is required
    expect_error: bool | None = False
    #: (file, row index | "header" | ("line", N) | None, column) where an error must be reported; "*" = anywhere
    expect_at: tuple | None = None


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _csv_text(table: Table, layout: Layout) -> tuple[str, dict[int, int]]:
    """Serialise a table; return the text and the editor line on which each row starts."""
    buffer = io.StringIO()
    writer = csv.writer(
        buffer, lineterminator=layout.newline, quoting=csv.QUOTE_ALL if layout.quote_all else csv.QUOTE_MINIMAL
    )
    writer.writerow(table.header)
    lines = {}
    for i, row in enumerate(table.rows):
        if i in layout.blank_before:
            buffer.write(layout.newline)
        lines[i] = len(_LINE_BREAK.findall(buffer.getvalue())) + 1  # editor lines: cells may hold line breaks
        if i in table.raw_rows:
            buffer.write(table.raw_rows[i] + layout.newline)
        else:
            writer.writerow(row)
    return buffer.getvalue(), lines


def write_case(case: Case, root: Path) -> tuple[Path, dict[str, dict[int, int]]]:
    """Write the dataset folder of a case; return it and the line of every row of each CSV file."""
    path = root / "ds"
    path.mkdir()
    lines: dict[str, dict[int, int]] = {}
    texts = {"dataset.toml": case.toml}
    for name, table in (("studies.csv", case.studies), (case.data_name, case.data)):
        texts[name], lines[name] = _csv_text(table, case.layout)
    for name, text in texts.items():
        data = text.encode("utf-8")
        if case.layout.bom and name.endswith(".csv"):
            data = b"\xef\xbb\xbf" + data
        if name in case.override:
            data = case.override[name]
        if data is not None:
            (path / name).write_bytes(data)
    return path, lines


# --- strategies for valid datasets -------------------------------------------------------------

#: Ids: any printable text without surrounding spaces (commas, quotes, newlines and non-ASCII
#: letters included: the CSV writer quotes them and the reader must give them back unchanged).
ID_TEXT = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00\r"), min_size=1, max_size=6
).filter(lambda s: s == s.strip() and s != "")
OUTCOME_ID = st.from_regex(r"\A[A-Za-zÄÖÜßé][A-Za-z0-9_.äöüα-ω]{0,7}\Z")
NUMBER = st.floats(-1e6, 1e6, allow_nan=False).map(repr) | st.sampled_from(["0.22", "+1.5", ".5", "3.", "-2e-3", "400"])
POSITIVE = st.floats(1e-3, 1e4).map(repr) | st.sampled_from(["0.03", "1e-2", "+60", "12.5"])
COUNT = st.integers(2, 60).map(str) | st.sampled_from(["8.0", "10000", "02"])
EXTRA_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00\r"), max_size=10)


def toml_text(outcomes: dict[str, int], *, extra: str = "") -> str:
    lines = [
        'name = "fuzz"',
        'title = "Generated test dataset"',
        'provenance = "simulated"',
        'citation = "hypothesis"',
        'effect_measure = "SMD"',
        extra,
        "",
    ]
    for oid, direction in outcomes.items():
        lines += [
            f"[outcomes.{json.dumps(oid, ensure_ascii=False)}]",
            f'label = "{oid} label"',
            'unit = "u"',
            f"direction = {direction}",
            "",
        ]
    lines += [
        "[moderators.species]",
        'type = "categorical"',
        'reference = "rat"',
        'levels = ["rat", "mouse"]',
        "",
        "[moderators.duration_weeks]",
        'type = "numeric"',
        "",
    ]
    return "\n".join(lines)


@st.composite
def studies_tables(draw: Callable, ids: list[str]) -> Table:
    header = ["study", "species", "duration_weeks", "rob_blinding"]
    rows = [
        [
            sid,
            draw(st.sampled_from(["rat", "mouse"])),
            draw(st.sampled_from(["4", "8.5", "12", "1e1"])),
            draw(st.sampled_from(["low", "high", "unclear", "LOW"])),
        ]
        for sid in ids
    ]
    return Table(header, rows)


@st.composite
def arm_rows(draw: Callable, study: str, outcome: str) -> list[dict[str, str]]:
    """One study's rows for one outcome: 1-2 controls, 0-3 treatments, 0-1 sham."""
    n_controls = draw(st.integers(1, 2))
    names = draw(st.lists(ID_TEXT, min_size=n_controls + 4, max_size=n_controls + 4, unique=True))
    controls, treatments = names[:n_controls], names[n_controls : n_controls + draw(st.integers(0, 3))]
    rows = []
    for arm, role in [(c, "control") for c in controls] + [(t, "treatment") for t in treatments]:
        rows.append(
            {
                "arm": arm,
                "role": role,
                "control_arm": draw(st.sampled_from(controls)) if role == "treatment" and n_controls > 1 else "",
            }
        )
    if draw(st.booleans()):
        rows.append({"arm": names[-1], "role": "sham", "control_arm": ""})
    for row in rows:
        row.update(study=study, outcome=outcome, mean=draw(NUMBER), n=draw(COUNT))
        row.update({"sd": draw(POSITIVE), "sem": ""} if draw(st.booleans()) else {"sd": "", "sem": draw(POSITIVE)})
        if row["role"] == "treatment" and n_controls == 1 and draw(st.booleans()):
            row["control_arm"] = controls[0]  # naming the only control is allowed
    return rows


@st.composite
def valid_arm_cases(draw: Callable) -> Case:
    """A valid arm-level dataset with random structure and layout."""
    ids = draw(st.lists(ID_TEXT, min_size=1, max_size=4, unique=True))
    outcomes = draw(st.dictionaries(OUTCOME_ID, st.sampled_from([1, -1]), min_size=1, max_size=3))
    rows = []
    for sid in ids:
        for oid in draw(st.lists(st.sampled_from(sorted(outcomes)), unique=True, max_size=len(outcomes))):
            rows += draw(arm_rows(sid, oid))
    assume(any(r["role"] == "treatment" for r in rows))
    columns = ["study", "arm", "role", "outcome", "mean", "sd", "sem", "n", "control_arm"]
    extras = draw(st.lists(st.sampled_from(["unit", "site", "source", "notes"]), unique=True, max_size=2))
    for row in rows:
        row.update({c: draw(EXTRA_TEXT).strip() for c in extras})
    header = draw(st.permutations(columns + extras))
    order = draw(st.permutations(range(len(rows))))
    table = Table(list(header), [[rows[i][c] for c in header] for i in order])
    studies = draw(studies_tables(ids))
    layout = Layout(
        newline=draw(st.sampled_from(["\n", "\r\n"])),
        bom=draw(st.booleans()),
        quote_all=draw(st.booleans()),
        blank_before=frozenset(draw(st.sets(st.integers(0, len(rows)), max_size=2))),
    )
    return Case(toml=toml_text(outcomes), studies=studies, data_name="arms.csv", data=table, layout=layout)


@st.composite
def valid_effect_cases(draw: Callable) -> Case:
    """A valid effect-level dataset (yi with vi or sei, optional group sizes and comparison ids)."""
    ids = draw(st.lists(ID_TEXT, min_size=1, max_size=5, unique=True))
    outcomes = draw(st.dictionaries(OUTCOME_ID, st.sampled_from([1, -1]), min_size=1, max_size=2))
    header = ["study", "outcome", "comparison", "yi", "vi", "sei", "n_treatment", "n_control"]
    rows = []
    for sid in ids:
        for oid in draw(st.lists(st.sampled_from(sorted(outcomes)), unique=True, min_size=1)):
            for comp in draw(st.lists(st.sampled_from(["", "a", "b"]), unique=True, min_size=1, max_size=1)):
                vi, sei = (draw(POSITIVE), "") if draw(st.booleans()) else ("", draw(POSITIVE))
                rows.append(
                    [sid, oid, comp, draw(NUMBER), vi, sei, draw(COUNT | st.just("")), draw(COUNT | st.just(""))]
                )
    return Case(
        toml=toml_text(outcomes), studies=draw(studies_tables(ids)), data_name="effects.csv", data=Table(header, rows)
    )


# --- mutations ----------------------------------------------------------------------------------

BAD_NUMBERS = [
    "",
    "abc",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e999",
    "-1e400",
    "1,5",
    "0x10",
    "１２",
    "٣",
    "1.2.3",
    "--1",
    "e5",
    "1e",
    " . ",
    "≈3",
    "3 mm",
    "None",
    "NA",
]
BAD_POSITIVE = BAD_NUMBERS + ["0", "-1", "-0.0", "0e7", "1e-400"]
BAD_COUNTS = ["", "0", "1", "-3", "2.5", "x", "nan", "inf", "1e3", "9" * 30, "1000001", "８", "½"]


def _rows_where(table: Table, **conditions: str) -> list[int]:
    return [i for i, row in enumerate(table.rows) if all(row[table.col(c)] == v for c, v in conditions.items())]


@st.composite
def mutated_arm_cases(draw: Callable) -> Case:
    """A valid arm-level case with one mutation (see the module docstring)."""
    case = draw(valid_arm_cases())
    table, n = case.data, len(case.data.rows)
    i = draw(st.integers(0, n - 1))
    kind = draw(
        st.sampled_from(
            [
                "mean",
                "dispersion",
                "n",
                "role",
                "study",
                "outcome",
                "duplicate",
                "drop_column",
                "ragged",
                "quote",
                "latin1",
                "utf16",
                "random_bytes",
                "empty",
                "whitespace",
                "missing",
                "semicolon",
                "extra_column",
                "undeclare_outcome",
                "padded_number",
                "controls_ambiguous",
                "control_arm_unknown",
            ]
        )
    )
    if kind == "mean":
        return replace(
            case,
            data=table.with_cell(i, "mean", draw(st.sampled_from(BAD_NUMBERS))),
            expect_error=True,
            expect_at=("arms.csv", i, "mean"),
        )
    if kind == "dispersion":
        col = "sd" if table.get(i, "sd") else "sem"
        value = draw(st.sampled_from(BAD_POSITIVE))
        return replace(
            case,
            data=table.with_cell(i, col, value),
            expect_error=True,
            expect_at=("arms.csv", i, "sd/sem" if value == "" else col),
        )
    if kind == "n":
        return replace(
            case,
            data=table.with_cell(i, "n", draw(st.sampled_from(BAD_COUNTS))),
            expect_error=True,
            expect_at=("arms.csv", i, "n"),
        )
    if kind == "role":
        role = draw(EXTRA_TEXT.filter(lambda s: s.strip() not in ("treatment", "control", "sham")))
        return replace(
            case, data=table.with_cell(i, "role", role), expect_error=True, expect_at=("arms.csv", i, "role")
        )
    if kind == "study":
        known = {r[0] for r in case.studies.rows}
        sid = draw(EXTRA_TEXT.filter(lambda s: s.strip() not in known))
        return replace(
            case, data=table.with_cell(i, "study", sid), expect_error=True, expect_at=("arms.csv", i, "study")
        )
    if kind == "outcome":  # an outcome present in arms.csv but not declared in dataset.toml
        oid = draw(OUTCOME_ID.filter(lambda s: f"[outcomes.{json.dumps(s, ensure_ascii=False)}]" not in case.toml))
        return replace(
            case, data=table.with_cell(i, "outcome", oid), expect_error=True, expect_at=("arms.csv", i, "outcome")
        )
    if kind == "undeclare_outcome":
        oid = table.get(i, "outcome")
        block = f"[outcomes.{json.dumps(oid, ensure_ascii=False)}]"
        toml = case.toml.replace(block, f"[unused.{json.dumps(oid, ensure_ascii=False)}]")
        if "[outcomes." not in toml:  # no outcome left: reported once on dataset.toml, not on every row
            return replace(case, toml=toml, expect_error=True, expect_at=("dataset.toml", None, "outcomes"))
        return replace(case, toml=toml, expect_error=True, expect_at=("arms.csv", i, "outcome"))
    if kind == "duplicate":
        rows = table.rows + [list(table.rows[i])]
        return replace(
            case, data=replace(table, rows=rows), expect_error=True, expect_at=("arms.csv", n, "study,arm,outcome")
        )
    if kind == "drop_column":
        col = draw(st.sampled_from(["study", "arm", "role", "outcome", "mean", "n"]))
        k = table.col(col)
        dropped = Table(
            [h for j, h in enumerate(table.header) if j != k],
            [[c for j, c in enumerate(r) if j != k] for r in table.rows],
        )
        return replace(case, data=dropped, expect_error=True, expect_at=("arms.csv", "header", col))
    if kind == "ragged":
        row = list(table.rows[i])
        row = row[:-1] if draw(st.booleans()) else row + [draw(EXTRA_TEXT)]
        rows = [list(r) for r in table.rows]
        rows[i] = row
        return replace(case, data=replace(table, rows=rows), expect_error=True, expect_at=("arms.csv", i, None))
    if kind == "quote":  # a stray opening quote in a numeric cell
        cells = ['"' + c if j == table.col("mean") else _quoted(c) for j, c in enumerate(table.rows[i])]
        return replace(
            case,
            data=replace(table, raw_rows={i: ",".join(cells)}),
            expect_error=True,
            expect_at=("arms.csv", "*", "*"),
        )
    if kind == "latin1":
        rows = [list(r) for r in table.rows]
        rows[i] = rows[i] + ["Müller"]
        grown = Table(table.header + ["source_note"], [r + [""] if j != i else r for j, r in enumerate(rows)])
        text, _ = _csv_text(grown, case.layout)
        return replace(
            case,
            override={"arms.csv": text.encode("latin-1", errors="replace")},
            expect_error=_not_utf8(text.encode("latin-1", errors="replace")),
            expect_at=None,
        )
    if kind == "utf16":
        text, _ = _csv_text(table, case.layout)
        encoding = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32"]))
        return replace(
            case, override={"arms.csv": text.encode(encoding)}, expect_error=True, expect_at=("arms.csv", "*", None)
        )
    if kind == "random_bytes":
        return replace(
            case,
            override={"arms.csv": draw(st.binary(max_size=200))},
            expect_error=True,
            expect_at=("arms.csv", "*", "*"),
        )
    if kind in ("empty", "whitespace", "missing"):
        data = {"empty": b"", "whitespace": b"  \n\r\n\t\n", "missing": None}[kind]
        return replace(case, override={"arms.csv": data}, expect_error=True, expect_at=("arms.csv", None, None))
    if kind == "semicolon":
        text, _ = _csv_text(table, case.layout)
        return replace(
            case,
            override={"arms.csv": text.replace(",", ";").encode()},
            expect_error=True,
            expect_at=("arms.csv", "*", "*"),
        )
    if kind == "extra_column":  # legal: extra columns are ignored
        name = draw(st.sampled_from(["comment", "Unit2", "ß", "x y"]))
        grown = Table(table.header + [name], [r + [draw(EXTRA_TEXT).strip()] for r in table.rows])
        return replace(case, data=grown, expect_error=False)
    if kind == "padded_number":  # legal: cells are stripped
        return replace(case, data=table.with_cell(i, "mean", f"  {table.get(i, 'mean')}\t"), expect_error=False)
    if kind == "controls_ambiguous":  # a second control arm while a treatment names none
        return _second_control(case, draw)
    treat = _rows_where(table, role="treatment")
    j = treat[draw(st.integers(0, len(treat) - 1))]
    return replace(
        case,
        data=table.with_cell(j, "control_arm", "no-such-arm"),
        expect_error=True,
        expect_at=("arms.csv", j, "control_arm"),
    )


def _second_control(case: Case, draw: Callable) -> Case:
    table = case.data
    treat = [i for i in _rows_where(table, role="treatment") if table.get(i, "control_arm") == ""]
    if not treat:
        return replace(case, expect_error=False)
    i = treat[draw(st.integers(0, len(treat) - 1))]
    study, outcome = table.get(i, "study"), table.get(i, "outcome")
    taken = {table.get(j, "arm") for j in _rows_where(table, study=study, outcome=outcome)}
    arm = next(f"ctrl{k}" for k in range(100) if f"ctrl{k}" not in taken)
    row = dict(zip(table.header, table.rows[i], strict=True)) | {"arm": arm, "role": "control", "control_arm": ""}
    grown = replace(table, rows=table.rows + [[row[h] for h in table.header]])
    return replace(case, data=grown, expect_error=True, expect_at=("arms.csv", i, "control_arm"))


def _quoted(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"'


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@st.composite
def mutated_meta_cases(draw: Callable) -> Case:
    """A valid case with one mutation of ``dataset.toml`` or ``studies.csv``."""
    case = draw(valid_arm_cases())
    studies, toml = case.studies, case.toml
    i = draw(st.integers(0, len(studies.rows) - 1))
    kind = draw(
        st.sampled_from(
            [
                "toml_syntax",
                "toml_missing_key",
                "toml_wrong_type",
                "direction",
                "provenance",
                "no_outcomes",
                "moderator_type",
                "toml_bytes",
                "toml_bom",
                "toml_utf16",
                "toml_empty",
                "toml_missing",
                "outcome_id_path",
                "study_duplicate",
                "study_missing_id",
                "moderator_numeric",
                "moderator_level",
                "rob",
                "studies_no_column",
                "study_removed",
                "study_extra",
                "studies_empty",
                "studies_header_only",
            ]
        )
    )
    if kind == "toml_syntax":
        lines = toml.split("\n")
        at = draw(st.integers(0, len(lines)))
        junk = draw(st.sampled_from(["x = = 1", "[outcomes", "name = 'unterminated", "= 3", "\x01 = 1", "a = [1, 2"]))
        text = "\n".join(lines[:at] + [junk] + lines[at:])
        where = "*" if junk.startswith("a = [") else ("line", at + 1)  # an open array fails further down
        return replace(case, toml=text, expect_error=True, expect_at=("dataset.toml", where, None))
    if kind == "toml_missing_key":
        key = draw(st.sampled_from(["name", "title", "provenance", "citation"]))
        text = "\n".join(line for line in toml.split("\n") if not line.startswith(f"{key} ="))
        return replace(case, toml=text, expect_error=True, expect_at=("dataset.toml", None, key))
    if kind == "toml_wrong_type":
        key = draw(st.sampled_from(["name", "title", "citation"]))
        value = draw(st.sampled_from(["3", "true", "[1, 2]", "1979-05-27", "{a = 1}", "nan"]))
        text = "\n".join(f"{key} = {value}" if line.startswith(f"{key} =") else line for line in toml.split("\n"))
        return replace(case, toml=text, expect_error=True, expect_at=("dataset.toml", None, key))
    if kind == "direction":
        value = draw(st.sampled_from(["0", "2", '"up"', "true", "nan", "inf", "1.5", "-0.5", "[1]"]))
        oid = json.loads(re.search(r'^\[outcomes\.(".*")\]$', toml, flags=re.MULTILINE).group(1))
        first = toml.index("direction = ")
        end = toml.index("\n", first)
        text = toml[:first] + f"direction = {value}" + toml[end:]
        return replace(
            case, toml=text, expect_error=True, expect_at=("dataset.toml", None, f"outcomes.{oid}.direction")
        )
    if kind == "provenance":
        return replace(
            case,
            toml=toml.replace('provenance = "simulated"', 'provenance = "made up"'),
            expect_error=True,
            expect_at=("dataset.toml", None, "provenance"),
        )
    if kind == "no_outcomes":
        text = toml.replace("[outcomes.", "[measures.")
        return replace(case, toml=text, expect_error=True, expect_at=("dataset.toml", None, "outcomes"))
    if kind == "moderator_type":
        return replace(
            case,
            toml=toml.replace('type = "numeric"', 'type = "number"'),
            expect_error=True,
            expect_at=("dataset.toml", None, "moderators.duration_weeks.type"),
        )
    if kind == "outcome_id_path":  # an outcome id that would name a file outside the report folder
        bad = draw(st.sampled_from(["../evil", "a/b", "..", "x\\\\y"]))
        text = toml + f'\n[outcomes."{bad}"]\nlabel = "x"\ndirection = 1\n'
        return replace(case, toml=text, expect_error=True, expect_at=("dataset.toml", None, "*"))
    if kind.startswith("toml_") and kind != "toml_bom":
        data = {
            "toml_bytes": draw(st.binary(max_size=100)),
            "toml_utf16": toml.encode("utf-16"),
            "toml_empty": b"",
            "toml_missing": None,
        }[kind]
        return replace(case, override={"dataset.toml": data}, expect_error=True, expect_at=("dataset.toml", "*", "*"))
    if kind == "toml_bom":  # legal: a UTF-8 byte-order mark (Windows Notepad) is accepted
        return replace(case, override={"dataset.toml": b"\xef\xbb\xbf" + toml.encode()}, expect_error=False)
    if kind == "study_duplicate":
        grown = replace(studies, rows=studies.rows + [list(studies.rows[i])])
        return replace(case, studies=grown, expect_error=True, expect_at=("studies.csv", len(studies.rows), "study"))
    if kind == "study_missing_id":
        return replace(
            case,
            studies=studies.with_cell(i, "study", draw(st.sampled_from(["", "  ", "\t"]))),
            expect_error=True,
            expect_at=("studies.csv", i, "study"),
        )
    if kind == "moderator_numeric":
        value = draw(st.sampled_from(BAD_NUMBERS))
        return replace(
            case,
            studies=studies.with_cell(i, "duration_weeks", value),
            expect_error=True,
            expect_at=("studies.csv", i, "duration_weeks"),
        )
    if kind == "moderator_level":
        value = draw(EXTRA_TEXT.filter(lambda s: s.strip() not in ("rat", "mouse")))
        return replace(
            case,
            studies=studies.with_cell(i, "species", value),
            expect_error=True,
            expect_at=("studies.csv", i, "species"),
        )
    if kind == "rob":
        value = draw(EXTRA_TEXT.filter(lambda s: s.strip().lower() not in ("low", "high", "unclear")))
        return replace(
            case,
            studies=studies.with_cell(i, "rob_blinding", value),
            expect_error=True,
            expect_at=("studies.csv", i, "rob_blinding"),
        )
    if kind == "studies_no_column":
        col = draw(st.sampled_from(["study", "species", "duration_weeks"]))
        k = studies.col(col)
        dropped = Table(
            [h for j, h in enumerate(studies.header) if j != k],
            [[c for j, c in enumerate(r) if j != k] for r in studies.rows],
        )
        return replace(case, studies=dropped, expect_error=True, expect_at=("studies.csv", "header", col))
    if kind == "study_removed":  # its data rows now name an unknown study
        sid = studies.rows[i][0]
        used = _rows_where(case.data, study=sid)
        shrunk = replace(studies, rows=[r for j, r in enumerate(studies.rows) if j != i])
        if not used:
            return replace(case, studies=shrunk, expect_error=None)
        return replace(case, studies=shrunk, expect_error=True, expect_at=("arms.csv", used[0], "study"))
    if kind == "study_extra":  # legal: a study without data rows (a warning says it contributes nothing)
        taken = {r[0] for r in studies.rows}
        sid = next(f"Extra{k}" for k in range(100) if f"Extra{k}" not in taken)
        return replace(
            case, studies=replace(studies, rows=studies.rows + [[sid, "rat", "4", "low"]]), expect_error=False
        )
    if kind == "studies_empty":
        return replace(case, override={"studies.csv": b""}, expect_error=True, expect_at=("studies.csv", None, None))
    return replace(case, studies=replace(studies, rows=[]), expect_error=True, expect_at=("studies.csv", "*", "*"))


@st.composite
def mutated_effect_cases(draw: Callable) -> Case:
    case = draw(valid_effect_cases())
    table = case.data
    i = draw(st.integers(0, len(table.rows) - 1))
    kind = draw(st.sampled_from(["yi", "dispersion", "n", "duplicate", "drop_yi", "ragged", "undeclared", "valid"]))
    if kind == "yi":
        return replace(
            case,
            data=table.with_cell(i, "yi", draw(st.sampled_from(BAD_NUMBERS))),
            expect_error=True,
            expect_at=("effects.csv", i, "yi"),
        )
    if kind == "dispersion":
        col = "vi" if table.get(i, "vi") else "sei"
        value = draw(st.sampled_from(BAD_POSITIVE + ["1e-200"] if col == "sei" else BAD_POSITIVE))
        return replace(
            case,
            data=table.with_cell(i, col, value),
            expect_error=True,
            expect_at=("effects.csv", i, "vi/sei" if value == "" else col),
        )
    if kind == "n":
        col = draw(st.sampled_from(["n_treatment", "n_control"]))
        value = draw(st.sampled_from([v for v in BAD_COUNTS if v]))
        return replace(case, data=table.with_cell(i, col, value), expect_error=True, expect_at=("effects.csv", i, col))
    if kind == "duplicate":
        return replace(
            case,
            data=replace(table, rows=table.rows + [list(table.rows[i])]),
            expect_error=True,
            expect_at=("effects.csv", len(table.rows), "study,outcome,comparison"),
        )
    if kind == "drop_yi":
        k = table.col("yi")
        dropped = Table(
            [h for j, h in enumerate(table.header) if j != k],
            [[c for j, c in enumerate(r) if j != k] for r in table.rows],
        )
        return replace(case, data=dropped, expect_error=True, expect_at=("effects.csv", "header", "yi"))
    if kind == "ragged":
        rows = [list(r) for r in table.rows]
        rows[i] = rows[i] + ["1"]
        return replace(case, data=replace(table, rows=rows), expect_error=True, expect_at=("effects.csv", i, None))
    if kind == "undeclared":
        return replace(
            case,
            data=table.with_cell(i, "outcome", "Undeclared_X"),
            expect_error=True,
            expect_at=("effects.csv", i, "outcome"),
        )
    return case


# --- the invariants -----------------------------------------------------------------------------


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _data_rows(path: Path) -> list[list[str]]:
    """Data rows of a (valid, UTF-8) CSV file, counted independently of the reader under test."""
    text = path.read_bytes().decode("utf-8-sig")
    records = [r for r in csv.reader(io.StringIO(text, newline="")) if r and not (len(r) == 1 and not r[0].strip())]
    return records[1:]


def _check_problem_shape(problem: Problem, folder: Path) -> None:
    assert problem.severity in ("error", "warning")
    assert problem.file in FILES or problem.file == str(folder), problem
    assert isinstance(problem.message, str) and problem.message.strip(), problem
    if problem.line is not None:
        assert isinstance(problem.line, int) and problem.line >= 1, problem
        file = folder / problem.file
        if file.is_file():
            data = file.read_bytes()
            assert problem.line <= data.count(b"\n") + data.count(b"\r") + 1, problem
    assert str(problem).startswith(f"{problem.severity}: {problem.file}")


def _check_expected_location(case: Case, found: list[Problem], lines: dict[str, dict[int, int]]) -> None:
    if case.expect_at is None:
        return
    file, where, column = case.expect_at
    candidates = [p for p in found if p.file == file]
    assert candidates, (case.expect_at, found)
    if where == "header":
        candidates = [p for p in candidates if p.line == 1]
    elif where is None:
        candidates = [p for p in candidates if p.line is None]
    elif isinstance(where, tuple):
        candidates = [p for p in candidates if p.line == where[1]]
    elif where != "*":
        candidates = [p for p in candidates if p.line == lines[file][where]]
    if column != "*":
        candidates = [p for p in candidates if p.column == column]
    line = lines.get(file, {}).get(where) if isinstance(where, int) else where
    assert candidates, (f"no error at {case.expect_at} (line {line})", found)


def check_case(case: Case) -> None:
    """Write the case, validate it in every way and check the invariants of the module docstring."""
    with tempfile.TemporaryDirectory() as tmp:
        folder, lines = write_case(case, Path(tmp))
        problems = validate_dataset(folder)
        for problem in problems:
            _check_problem_shape(problem, folder)
        found = errors(problems)
        if case.expect_error is not None:
            assert bool(found) == case.expect_error, problems
        _check_expected_location(case, found, lines)
        code, out, err = _run_cli(["validate", str(folder)])
        assert code == (1 if found else 0)
        assert ("INVALID" in out) == bool(found)
        assert all(str(p) in err for p in problems)
        target = Path(tmp) / "effects_out.csv"
        code, _, err = _run_cli(["effects", str(folder), "--out", str(target)])
        if found:
            _check_invalid(folder, target, code, err)
        else:
            _check_valid(case, folder, target, code)


def _check_invalid(folder: Path, target: Path, code: int, err: str) -> None:
    assert code == 1 and "INVALID" in err and "nothing written" in err
    assert not target.exists() and not any(p.name.startswith(f".{target.name}") for p in target.parent.iterdir())
    with pytest.raises(DatasetError) as info:
        load_dataset(folder)
    assert errors(info.value.problems)


def _check_valid(case: Case, folder: Path, target: Path, code: int) -> None:
    assert code == 0 and target.is_file()
    dataset = load_dataset(folder)
    rows = _data_rows(folder / case.data_name)
    loaded = dataset.arms if case.data_name == "arms.csv" else dataset.effects
    assert len(loaded) == len(rows), "a data row was dropped or invented"
    assert len(dataset.studies) == len(_data_rows(folder / "studies.csv"))
    table = compute_effects(dataset)
    expected = int((loaded["role"] == "treatment").sum()) if case.data_name == "arms.csv" else len(loaded)
    assert len(table.data) == expected, "one comparison per treatment row (arms) or per effect row"
    assert len(_data_rows(target)) == expected
    assert table.data["yi"].notna().all() and (table.data["vi"] > 0).all()


# --- the tests (fast, derandomised budgets; slow twins explore more) ----------------------------


def _fuzz(strategy: st.SearchStrategy, fast: int, slow: int) -> tuple[Callable, Callable]:
    @settings(max_examples=fast, **FAST)
    @given(strategy)
    def fast_test(case: Case) -> None:
        check_case(case)

    @pytest.mark.slow
    @settings(max_examples=slow, **SLOW)
    @given(strategy)
    def slow_test(case: Case) -> None:
        check_case(case)

    return fast_test, slow_test


test_valid_arm_datasets_lose_no_row, test_valid_arm_datasets_lose_no_row_slow = _fuzz(valid_arm_cases(), 40, 500)
test_valid_effect_datasets_lose_no_row, test_valid_effect_datasets_lose_no_row_slow = _fuzz(
    valid_effect_cases(), 20, 300
)
test_mutated_arms_give_located_errors, test_mutated_arms_give_located_errors_slow = _fuzz(
    mutated_arm_cases(), 100, 1000
)
test_mutated_declarations_give_located_errors, test_mutated_declarations_give_located_errors_slow = _fuzz(
    mutated_meta_cases(), 60, 800
)
test_mutated_effects_give_located_errors, test_mutated_effects_give_located_errors_slow = _fuzz(
    mutated_effect_cases(), 30, 400
)


@st.composite
def arbitrary_file_cases(draw: Callable) -> Case:
    """A valid dataset with one file replaced by arbitrary text or bytes."""
    case = draw(valid_arm_cases())
    name = draw(st.sampled_from(["dataset.toml", "studies.csv", "arms.csv"]))
    content = draw(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
    return replace(case, override={name: content}, expect_error=None)


@st.composite
def arbitrary_csv_text_cases(draw: Callable) -> Case:
    """arms.csv as a valid header followed by arbitrary comma/quote-heavy text."""
    case = draw(valid_arm_cases())
    alphabet = st.sampled_from(list(',"\n\r ;\t') + ["A", "1", "0.5", "-", "e", "treatment", "control", "é", "\x00"])
    body = draw(st.lists(alphabet, max_size=80).map("".join))
    text = ",".join(case.data.header) + "\n" + body
    return replace(case, override={"arms.csv": text.encode("utf-8")}, expect_error=None)


test_arbitrary_files_never_crash, test_arbitrary_files_never_crash_slow = _fuzz(arbitrary_file_cases(), 30, 500)
test_arbitrary_csv_text_never_crashes, test_arbitrary_csv_text_never_crashes_slow = _fuzz(
    arbitrary_csv_text_cases(), 30, 500
)


# --- a few pinned examples (regressions found by the fuzzer) ---------------------------------------


def _pinned(tmp_path: Path, arms: str, *, toml: str | None = None) -> list[Problem]:
    from tests.helpers import TOML, write_dataset

    return validate_dataset(write_dataset(tmp_path, arms=arms, toml=toml or TOML))


def _at(found: list[Problem], line: int | None, column: str | None) -> list[Problem]:
    return [p for p in found if p.line == line and p.column == column]


HEADER = "study,arm,role,outcome,mean,sd,sem,n,control_arm\n"


def test_short_row_is_located_not_a_traceback(tmp_path):
    arms = HEADER + "A2020,ovx,control,BMD,0.22,0.03,,8,\nA2020,ev,treatment,BMD,0.26,0.03,,8\n"
    found = errors(_pinned(tmp_path, arms))
    assert _at(found, 3, None) and "8 field(s)" in _at(found, 3, None)[0].message


def test_every_row_one_field_longer_is_not_read_as_an_index(tmp_path):
    arms = (
        HEADER.replace(",control_arm", "")
        + "x,A2020,ovx,control,BMD,0.22,0.03,,8\nx,A2020,ev,treatment,BMD,0.26,0.03,,8\n"
    )
    found = errors(_pinned(tmp_path, arms))
    assert _at(found, 2, None) and _at(found, 3, None)


def test_line_numbers_count_blank_lines_and_multiline_cells(tmp_path):
    arms = (
        HEADER + "\nA2020,ovx,control,BMD,0.22,0.03,,8,\n\n"
        'A2020,ev,treatment,BMD,0.26,0.03,,8,"ovx"\n"B2021\nx",ovx,control,BMD,oops,0.03,,8,\n'
    )
    found = errors(_pinned(tmp_path, arms))
    assert _at(found, 6, "mean") and _at(found, 6, "study")


def test_number_overflowing_to_inf_is_not_finite(tmp_path):
    arms = (
        HEADER + "A2020,ovx,control,BMD,1e999,0.03,,8,\nA2020,ev,treatment,BMD,0.26,0.03,,99999999999999999999999999,\n"
    )
    found = errors(_pinned(tmp_path, arms))
    assert _at(found, 2, "mean") and _at(found, 3, "n")


def test_values_whose_effect_size_overflows_are_errors(tmp_path):
    arms = HEADER + "A2020,ovx,control,BMD,-1e308,1e-300,,8,\nA2020,ev,treatment,BMD,1e308,,1e308,8,\n"
    found = errors(_pinned(tmp_path, arms))
    assert _at(found, 3, "sem")
    arms = HEADER + "A2020,ovx,control,BMD,-1e308,1,,8,\nA2020,ev,treatment,BMD,1e308,1,,8,\n"
    assert _at(errors(_pinned(tmp_path, arms)), 3, "mean")


def test_sem_only_file_with_large_sd_warns_without_crashing(tmp_path):
    arms = (
        "study,arm,role,outcome,mean,sem,n\nA2020,ovx,control,BMD,0.2,0.5,8\nA2020,ev,treatment,BMD,0.3,0.5,8\n"
        "B2021,ovx,control,BMD,0.2,0.01,8\nB2021,ev,treatment,BMD,0.3,0.01,8\n"
    )
    problems = _pinned(tmp_path, arms)
    assert not errors(problems) and _at(problems, 2, "sem")


def test_toml_syntax_error_has_its_line(tmp_path):
    from tests.helpers import TOML

    found = errors(_pinned(tmp_path, None, toml=TOML.replace('unit = "um"', 'unit = "um')))
    assert found and found[0].file == "dataset.toml" and found[0].line == 14


def test_utf16_and_semicolon_files_say_what_to_do(tmp_path):
    from tests.helpers import ARMS, write_dataset

    path = write_dataset(tmp_path)
    (path / "arms.csv").write_bytes(ARMS.encode("utf-16"))
    (path / "studies.csv").write_text("study;species\nA2020;rat\n", encoding="utf-8")
    messages = {p.file: p.message for p in errors(validate_dataset(path))}
    assert "UTF-16" in messages["arms.csv"] and "comma" in messages["studies.csv"]


def test_header_only_data_file_is_an_error(tmp_path):
    assert _at(errors(_pinned(tmp_path, HEADER)), None, None)


def test_hints_for_letter_case_and_unicode_normalisation(tmp_path):
    import unicodedata

    from tests.helpers import ARMS, STUDIES, write_dataset

    studies = STUDIES.replace("A2020", unicodedata.normalize("NFD", "Mü2020"))
    arms = ARMS.replace("A2020", unicodedata.normalize("NFC", "Mü2020"))
    found = errors(validate_dataset(write_dataset(tmp_path, studies=studies, arms=arms)))
    assert _at(found, 2, "study") and "Unicode" in _at(found, 2, "study")[0].message
    found = errors(validate_dataset(write_dataset(tmp_path, arms=ARMS.replace("study,", "Study,", 1))))
    assert "case-sensitive" in _at(found, 1, "study")[0].message
