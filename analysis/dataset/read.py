"""Reading a dataset folder as raw text, recording every read problem with its location.

Cells are kept as stripped strings so that the validator can say exactly which cell is
wrong; typed conversion happens only after validation (:mod:`analysis.dataset.load`).

CSV files are read with the standard :mod:`csv` module (comma-separated, ``"`` quoting, UTF-8
with or without a byte-order mark). The index of a raw table is ``line - 2``, where ``line``
is the editor line on which the row starts, so :func:`csv_line` locates a row exactly even
after blank lines or quoted cells that span several lines. Blank lines are skipped; every
other line is a row, and a row whose number of fields differs from the header's is an error
(it is never padded, truncated or dropped silently).
"""

from __future__ import annotations

import codecs
import csv
import datetime
import io
import math
import re
import tomllib
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.dataset.problems import Problem

TOML_NAME = "dataset.toml"
STUDIES_NAME = "studies.csv"
ARMS_NAME = "arms.csv"
EFFECTS_NAME = "effects.csv"

#: A decimal number in ASCII digits (no thousands separators, no NaN/inf spelled out).
_NUMBER = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_INTEGER = re.compile(r"^\+?([0-9]+)(\.0*)?$")
#: Whole numbers with more digits than this are returned as ``10**_MAX_INT_DIGITS`` (far above any
#: plausible count, so callers reject them) instead of being converted digit by digit.
_MAX_INT_DIGITS = 20
_UTF16_32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_TOML_WHERE = re.compile(r"at line (\d+), column (\d+)")


#: A cell value as openpyxl returns it.
CellValue = str | int | float | bool | datetime.datetime | datetime.date | datetime.time | datetime.timedelta | None


@dataclass
class RawDataset:
    """The files of a dataset folder as read, before any validation."""

    path: Path
    meta: dict | None = None
    studies: pd.DataFrame | None = None
    arms: pd.DataFrame | None = None
    effects: pd.DataFrame | None = None
    problems: list[Problem] = field(default_factory=list)


def parse_number(text: str) -> float | None:
    """Parse a finite decimal number; return None for anything else (text, NaN, inf, '', 1e999)."""
    if not _NUMBER.match(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def parse_integer(text: str) -> int | None:
    """Parse a non-negative whole number such as ``"8"`` or ``"8.0"``; None otherwise.

    Numbers with more than 20 digits are returned as ``10**20`` (callers reject them as too large).
    """
    match = _INTEGER.match(text)
    if not match:
        return None
    digits = match.group(1).lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_INT_DIGITS else 10**_MAX_INT_DIGITS


def numeric_cells(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Floats of a column of validated number cells; NaN for empty cells or a missing column."""
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    return np.array([np.nan if c == "" else float(c) for c in frame[column]], dtype=float)


def csv_line(index: int) -> int:
    """Editor line of a raw data row (its index + 2: the header is line 1, the first data row line 2)."""
    return int(index) + 2


def header_line(frame: pd.DataFrame) -> int:
    """Editor line of the header of a raw table (1 unless blank lines precede it)."""
    return int(frame.attrs.get("header_line", 1))


def _read_bytes(path: Path, problems: list[Problem]) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError as exc:
        problems.append(Problem("error", path.name, None, None, f"cannot be read ({exc.strerror or exc})"))
        return None


def decode_text(data: bytes, name: str, problems: list[Problem]) -> str | None:
    """Decode UTF-8 (a leading byte-order mark is allowed); record a located problem otherwise."""
    if data.startswith(_UTF16_32_BOMS):
        problems.append(
            Problem(
                "error", name, None, None, "file is UTF-16/UTF-32 encoded; save it as UTF-8 (e.g. Excel's 'CSV UTF-8')"
            )
        )
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problems.append(
            Problem(
                "error", name, line, None, f"not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8"
            )
        )
        return None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        problems.append(
            Problem(
                "error",
                name,
                line,
                None,
                "contains NUL bytes: not a text file (or UTF-16 without a byte-order mark); save it as UTF-8",
            )
        )
        return None
    return text


def _records(text: str, name: str, problems: list[Problem]) -> list[tuple[int, list[str]]] | None:
    """Non-blank CSV records as ``(first line, stripped cells)``; None (and a problem) if malformed."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records, last = [], 0
    try:
        for cells in reader:
            start, last = last + 1, reader.line_num
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            records.append((start, [c.strip() for c in cells]))
    except csv.Error as exc:
        problems.append(
            Problem("error", name, reader.line_num, None, f"malformed CSV ({exc}); check the quotes on this line")
        )
        return None
    return records


def _header_problems(header: list[str], line: int, name: str) -> list[Problem]:
    if len(header) == 1 and any(sep in header[0] for sep in (";", "\t", "|")):
        return [
            Problem(
                "error",
                name,
                line,
                None,
                f"the header is a single column {header[0]!r}: evmeta reads comma-separated values "
                "(not ';' or tab); save the file as CSV with commas",
            )
        ]
    problems = []
    if any(c == "" for c in header):
        problems.append(Problem("error", name, line, None, "header has empty column names"))
    for col in sorted({c for c in header if c and header.count(c) > 1}):
        problems.append(Problem("error", name, line, col, "column appears more than once in the header"))
    return problems


def read_csv_text(path: Path, problems: list[Problem]) -> pd.DataFrame | None:
    """Read a CSV file as stripped strings; record located problems and return None if unreadable.

    Rows whose number of fields differs from the header's are reported (with their line) and
    left out of the returned table, so that the other rows can still be checked; the dataset
    is invalid in that case, so nothing is ever computed without them.
    """
    data = _read_bytes(path, problems)
    text = None if data is None else decode_text(data, path.name, problems)
    return None if text is None else csv_table(text, path.name, problems)


def csv_table(text: str, name: str, problems: list[Problem]) -> pd.DataFrame | None:
    """Parse decoded CSV text as :func:`read_csv_text` does (``name`` locates the problems)."""
    records = _records(text, name, problems)
    return None if records is None else _table(records, name, problems)


def _table(records: list[tuple[int, list[str]]], name: str, problems: list[Problem]) -> pd.DataFrame | None:
    """A table of stripped strings from ``(line, cells)`` records, the first one the header."""
    if not records:
        problems.append(Problem("error", name, None, None, "file is empty (a header row is required)"))
        return None
    (first, header), rows = records[0], records[1:]
    bad_header = _header_problems(header, first, name)
    problems += bad_header
    if bad_header:
        return None
    kept = []
    for line, cells in rows:
        if len(cells) != len(header):
            problems.append(
                Problem(
                    "error",
                    name,
                    line,
                    None,
                    f"row has {len(cells)} field(s) but the header has "
                    f"{len(header)}: check for missing or extra commas, or unbalanced quotes",
                )
            )
        else:
            kept.append((line, cells))
    frame = pd.DataFrame([cells for _, cells in kept], columns=header, index=[line - 2 for line, _ in kept], dtype=str)
    frame.attrs["header_line"] = first
    return frame


def read_sheet(
    path: Path, problems: list[Problem], *, sheet: str | None = None, encoding: str = "utf-8"
) -> pd.DataFrame | None:
    """Read a spreadsheet as a table of stripped strings: a CSV file or one sheet of an XLSX workbook.

    Parameters
    ----------
    path : pathlib.Path
        ``.xlsx``/``.xlsm`` files are read with openpyxl (cached values of formulas); any other
        file as comma-separated text.
    problems : list of Problem
        Located problems are appended here (file name, line or sheet row, column).
    sheet : str, optional
        Worksheet of an XLSX file (default: the first one); an error for CSV files.
    encoding : str, default "utf-8"
        Text encoding of a CSV file (a UTF-8 byte-order mark is allowed with the default).

    Returns
    -------
    pandas.DataFrame or None
        As :func:`read_csv_text`: the index is ``row - 2``, so :func:`csv_line` gives the CSV
        line or the spreadsheet row; None if the file cannot be read.
    """
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        return _read_xlsx(path, sheet, problems)
    if path.suffix.lower() == ".xls":
        problems.append(Problem("error", path.name, None, None, "old binary .xls workbook: save it as .xlsx or CSV"))
        return None
    if sheet is not None:
        problems.append(Problem("error", path.name, None, None, f"--sheet {sheet!r} applies to XLSX workbooks only"))
        return None
    data = _read_bytes(path, problems)
    if data is None:
        return None
    try:
        utf8 = codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        problems.append(Problem("error", path.name, None, None, f"unknown text encoding {encoding!r}"))
        return None
    if utf8:
        found: list[Problem] = []
        text = decode_text(data, path.name, found)
        problems += [replace(p, message=f"{p.message}, or name its encoding (e.g. latin-1)") for p in found]
    else:
        text = _decode(data, path.name, encoding, problems)
    return None if text is None else csv_table(text, path.name, problems)


def _decode(data: bytes, name: str, encoding: str, problems: list[Problem]) -> str | None:
    """Decode text in a named encoding, recording the line of the first undecodable byte."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problems.append(Problem("error", name, line, None, f"not {encoding} text ({exc.reason} at byte {exc.start})"))
        return None


def _cell_text(value: CellValue) -> str:
    """Text of an XLSX cell value: whole floats without ``.0``, other floats exactly (shortest repr)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, datetime.datetime):
        return value.date().isoformat() if value.time() == datetime.time() else value.isoformat()
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value).strip()


def _read_xlsx(path: Path, sheet: str | None, problems: list[Problem]) -> pd.DataFrame | None:
    """Rows of one worksheet as ``(row, cells)`` records, trailing empty cells trimmed, then a table."""
    import openpyxl  # imported here: only the importer reads workbooks

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        problems.append(Problem("error", path.name, None, None, f"cannot be read as an XLSX workbook ({exc})"))
        return None
    try:
        if sheet is not None and sheet not in book.sheetnames:
            problems.append(
                Problem("error", path.name, None, None, f"no sheet {sheet!r}; the sheets are {book.sheetnames}")
            )
            return None
        rows = (book[sheet] if sheet is not None else book.worksheets[0]).iter_rows(min_row=1, values_only=True)
        records = []
        for number, values in enumerate(rows, start=1):
            cells = [_cell_text(v) for v in values]
            while cells and cells[-1] == "":
                cells.pop()
            if cells:
                records.append((number, cells))
    finally:
        book.close()
    if records:
        width = len(records[0][1])
        records = [(line, cells + [""] * (width - len(cells))) for line, cells in records]
    return _table(records, path.name, problems)


def read_toml(path: Path, problems: list[Problem]) -> dict | None:
    """Read ``dataset.toml`` (UTF-8); record a located problem and return None if it cannot be parsed."""
    data = _read_bytes(path, problems)
    text = None if data is None else decode_text(data, path.name, problems)
    if text is None:
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = _TOML_WHERE.search(str(exc))
        if where or "end of document" not in str(exc):
            line = int(where.group(1)) if where else getattr(exc, "lineno", None)
            problems.append(Problem("error", path.name, line, None, f"invalid TOML: {exc}"))
        else:
            problems.append(
                Problem(
                    "error",
                    path.name,
                    _unclosed_line(text),
                    None,
                    f"invalid TOML: {exc}; a string, array or table opened on this line is never closed",
                )
            )
    return None


def _unclosed_line(text: str) -> int:
    """Line where a construct that runs to the end of a TOML document starts.

    tomllib reports an unclosed quote or bracket "at end of document"; every prefix of the file
    that ends inside the construct fails to parse, so it starts right after the longest prefix
    (in whole lines) that parses.
    """
    lines = text.splitlines(keepends=True)
    last_ok = 0
    for i in range(1, len(lines) + 1):
        try:
            tomllib.loads("".join(lines[:i]))
        except tomllib.TOMLDecodeError:
            continue
        last_ok = i
    return min(last_ok + 1, max(len(lines), 1))


def read_raw(path: Path) -> RawDataset:
    """Read every file of a dataset folder that exists, recording read problems."""
    raw = RawDataset(path=path)
    if not path.is_dir():
        raw.problems.append(Problem("error", str(path), None, None, "dataset folder not found"))
        return raw
    toml_path = path / TOML_NAME
    if toml_path.is_file():
        raw.meta = read_toml(toml_path, raw.problems)
    else:
        raw.problems.append(Problem("error", TOML_NAME, None, None, "missing (required)"))
    studies_path = path / STUDIES_NAME
    if studies_path.is_file():
        raw.studies = read_csv_text(studies_path, raw.problems)
    else:
        raw.problems.append(Problem("error", STUDIES_NAME, None, None, "missing (required)"))
    has_arms, has_effects = (path / ARMS_NAME).is_file(), (path / EFFECTS_NAME).is_file()
    if has_arms and has_effects:
        raw.problems.append(
            Problem("error", ARMS_NAME, None, None, f"give either {ARMS_NAME} or {EFFECTS_NAME}, not both")
        )
    elif has_arms:
        raw.arms = read_csv_text(path / ARMS_NAME, raw.problems)
    elif has_effects:
        raw.effects = read_csv_text(path / EFFECTS_NAME, raw.problems)
    else:
        raw.problems.append(
            Problem("error", ARMS_NAME, None, None, f"missing: a dataset needs {ARMS_NAME} or {EFFECTS_NAME}")
        )
    return raw
