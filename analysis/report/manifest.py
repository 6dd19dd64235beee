"""The run manifest: data hash, package versions, seeds, git revision, timings and per-fit diagnostics."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata

from analysis.config import PROJECT_ROOT

PACKAGES = (
    "evmeta",
    "pymc",
    "pytensor",
    "arviz",
    "arviz-stats",
    "numpy",
    "scipy",
    "pandas",
    "xarray",
    "matplotlib",
    "h5netcdf",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of evmeta and its scientific dependencies (None if not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> str | None:
    """The git commit of the project checkout (with ``-dirty`` if modified), or None outside git."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")
