"""Located problems found in a dataset, and the error that carries them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One problem in a dataset, located by file, line and column.

    Attributes
    ----------
    severity : {"error", "warning"}
        Errors make a dataset unusable; warnings flag suspicious but legal values.
    file : str
        File name inside the dataset folder (e.g. ``"arms.csv"``).
    line : int or None
        1-based line of the file as shown by a text editor (the CSV header is line 1),
        or None when the problem concerns the whole file.
    column : str or None
        Column (CSV) or key (TOML) concerned, if any.
    message : str
        What is wrong and, where possible, how to fix it.
    """

    severity: Severity
    file: str
    line: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.column:
            where += f" [{self.column}]"
        return f"{self.severity}: {where}: {self.message}"


def errors(problems: list[Problem]) -> list[Problem]:
    """Return the problems of severity ``"error"``."""
    return [p for p in problems if p.severity == "error"]


def warnings_of(problems: list[Problem]) -> list[Problem]:
    """Return the problems of severity ``"warning"``."""
    return [p for p in problems if p.severity == "warning"]


class DatasetError(ValueError):
    """A dataset failed validation; ``problems`` lists every problem found."""

    def __init__(self, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        found = errors(problems)
        lines = "\n".join(f"  {p}" for p in found)
        super().__init__(f"dataset {path!r} has {len(found)} error(s):\n{lines}")


class NotApplicable(ValueError):
    """An analysis cannot run on these data: its precondition fails (e.g. too few studies).

    Raised by fitting and checking functions instead of a plain ValueError, so that ``evmeta run``
    and ``evmeta fit --all`` skip that analysis with the message as its one-line reason while a
    real error still stops the run.
    """
