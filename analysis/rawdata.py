"""Reading a dataset folder as raw text, recording every read problem with its location.

Cells are kept as stripped strings so that the validator can say exactly which cell is
wrong; typed conversion happens only after validation (:mod:`analysis.dataset`).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.problems import Problem

TOML_NAME = "dataset.toml"
STUDIES_NAME = "studies.csv"
ARMS_NAME = "arms.csv"
EFFECTS_NAME = "effects.csv"

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^\+?\d+(\.0*)?$")


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
    """Parse a finite decimal number; return None for anything else (text, NaN, inf, '')."""
    if not _NUMBER.match(text):
        return None
    return float(text)


def parse_integer(text: str) -> int | None:
    """Parse a non-negative whole number such as ``"8"`` or ``"8.0"``; None otherwise."""
    if not _INTEGER.match(text):
        return None
    return int(float(text))


def numeric_cells(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Floats of a column of validated number cells; NaN for empty cells or a missing column."""
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    return np.array([np.nan if c == "" else float(c) for c in frame[column]], dtype=float)


def csv_line(index: int) -> int:
    """Editor line of a data row: the header is line 1, the first data row line 2."""
    return int(index) + 2


def read_csv_text(path: Path, problems: list[Problem]) -> pd.DataFrame | None:
    """Read a CSV file as stripped strings; record a located problem and return None on failure."""
    name = path.name
    try:
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, encoding="utf-8-sig", skip_blank_lines=True
        )
    except UnicodeDecodeError as exc:
        problems.append(Problem("error", name, None, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"))
        return None
    except pd.errors.EmptyDataError:
        problems.append(Problem("error", name, None, None, "file is empty (a header row is required)"))
        return None
    except pd.errors.ParserError as exc:
        problems.append(Problem("error", name, None, None, f"malformed CSV: {exc}"))
        return None
    frame.columns = [str(c).strip() for c in frame.columns]
    unnamed = [c for c in frame.columns if c.startswith("Unnamed:") or c == ""]
    if unnamed:
        problems.append(Problem("error", name, 1, None, "header has empty column names"))
    duplicated = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    for col in duplicated:
        problems.append(Problem("error", name, 1, col, "column appears more than once in the header"))
    if unnamed or duplicated:
        return None
    return frame.apply(lambda col: col.str.strip())


def read_toml(path: Path, problems: list[Problem]) -> dict | None:
    """Read ``dataset.toml``; record a problem and return None if it cannot be parsed."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except UnicodeDecodeError as exc:
        problems.append(Problem("error", path.name, None, None, f"not UTF-8 text ({exc.reason})"))
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        problems.append(Problem("error", path.name, line, None, f"invalid TOML: {exc}"))
    return None


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
