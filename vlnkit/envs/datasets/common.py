"""What the street and the VLN-CE dataset formats share: the error for a malformed file, the limit on the
problems a release check lists per file, and small helpers for ids, atomic writes and JSON type names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MAX_PROBLEMS_PER_FILE = 20


class DatasetFormatError(ValueError):
    """A dataset file that does not follow its release format.

    Attributes:
        path: the offending file.
        line: 1-based line number, or ``None`` when the problem concerns the whole file.
        field: the column or record field at fault (``route_panoids[3]``), or ``None``.
        message: what is wrong and what was expected.
    """

    def __init__(self, path: str | Path, line: int | None, field: str | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = str(self.path) if self.line is None else f"{self.path}:{self.line}"
        what = "" if self.field is None else f" field '{self.field}':"
        return f"{where}:{what} {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.line, self.field, self.message))


def _maybe_int(value: str) -> int | str:
    """``value`` as an int when it is the canonical spelling of one (``"12"``, not ``"012"``)."""
    try:
        number = int(value)
    except ValueError:
        return value
    return number if str(number) == value else value


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
