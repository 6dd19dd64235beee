"""Content-addressed cache of per-outcome analysis artifacts (``.evmeta_cache/``, git-ignored).

The key of an outcome's artifacts hashes everything its numbers and figures depend on: the
evmeta source code, the versions of the numerical packages, the dataset declarations and
study table, the data rows of that outcome, and the analysis settings (priors, sampler, seed).
An unchanged rerun therefore loads every outcome from the cache, and a change to one
outcome's rows recomputes that outcome only. Entries are written atomically; an unreadable
entry (e.g. from an older evmeta) is treated as a miss and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from importlib import metadata
from pathlib import Path

from analysis.atomic import write_bytes_atomic
from analysis.config import CACHE_DIR, PROJECT_ROOT

_PACKAGES = (
    "pymc",
    "pytensor",
    "arviz",
    "arviz-stats",
    "arviz-plots",
    "numpy",
    "scipy",
    "pandas",
    "xarray",
    "matplotlib",
)
CACHE_VERSION = "3"
#: Folders whose Python files are the evmeta source code.
SOURCE_FOLDERS = ("analysis", "models")


def source_files(root: Path | None = None) -> list[Path]:
    """Every ``.py`` file under ``analysis/`` and ``models/`` of ``root`` (default: this checkout), recursively."""
    root = PROJECT_ROOT if root is None else root
    return sorted(p for folder in SOURCE_FOLDERS for p in (root / folder).rglob("*.py") if "__pycache__" not in p.parts)


def source_digest(root: Path | None = None) -> str:
    """SHA-256 of the evmeta source files (:func:`source_files`, by relative path) and numerical package versions."""
    digest = hashlib.sha256(CACHE_VERSION.encode())
    root = PROJECT_ROOT if root is None else root
    for path in source_files(root):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    for name in _PACKAGES:
        try:
            digest.update(f"{name}={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}=none".encode())
    return digest.hexdigest()


def outcome_key(
    *, source: str, dataset_files: dict[str, bytes], outcome_rows: str, outcome: str, settings: dict
) -> str:
    """Cache key of one outcome's artifacts (see the module docstring)."""
    digest = hashlib.sha256(source.encode())
    for name in sorted(dataset_files):
        digest.update(name.encode())
        digest.update(dataset_files[name])
    digest.update(outcome_rows.encode())
    digest.update(outcome.encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def load(key: str, *, folder: Path = CACHE_DIR) -> object | None:
    """The cached object for ``key``, or None on a miss or an unreadable entry."""
    path = folder / f"{key}.pkl"
    if not path.is_file():
        return None
    try:
        with path.open("rb") as handle:
            return pickle.load(handle)
    except Exception:  # a corrupt or incompatible entry is a miss, never an error
        return None


def contains(key: str, *, folder: Path = CACHE_DIR) -> bool:
    """True if an entry for ``key`` exists (without reading it)."""
    return (folder / f"{key}.pkl").is_file()


def store(key: str, value: object, *, folder: Path = CACHE_DIR) -> Path:
    """Store ``value`` under ``key`` atomically and return the entry's path."""
    return write_bytes_atomic(folder / f"{key}.pkl", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
