"""Paths and project-wide settings (the single place that knows where things live)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT: Path = Path(__file__).resolve().parents[1]
DATA_DIR: Path = PROJECT_ROOT / "data"
REPORTS_DIR: Path = PROJECT_ROOT / "reports"
#: Content-addressed cache of fits and figures; ``EVMETA_CACHE_DIR`` overrides it (benchmarks, tests).
CACHE_DIR: Path = Path(os.environ.get("EVMETA_CACHE_DIR", PROJECT_ROOT / ".evmeta_cache"))
DEFAULT_DATASET: Path = DATA_DIR / "bmsc_ev_osteoporosis"

#: Probability mass of every reported interval (equal-tailed), and its name in outputs.
INTERVAL_PROB: float = 0.95
INTERVAL_KIND: str = "eti95"
