"""The benchmark's measurements and its target table (nothing is timed here: timings live in reports/benchmark.json)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

from analysis.config import DEFAULT_DATASET
from analysis.studies.benchmark import TARGETS, edit_one_outcome, markdown, ratios, readme_pytest_args, run_measured

#: A parent holding ~100 MiB that starts a child holding ~150 MiB; both alive together for a while.
TREE_SCRIPT = (
    "import subprocess, sys, time; a = bytearray(100 * 2**20); "
    "p = subprocess.Popen([sys.executable, '-c', 'import time; b = bytearray(150 * 2**20); time.sleep(1.5)']); "
    "p.wait()"
)


def test_memory_summed_over_the_process_tree():
    run = run_measured([sys.executable, "-c", TREE_SCRIPT])
    assert run["exit_code"] == 0
    assert 100 <= run["peak_rss_mib"] < 200, run  # the parent's own peak
    assert run["peak_rss_tree_mib"] >= 250, run  # parent and child together


def test_editing_one_outcome_changes_only_its_rows(tmp_path):
    copy = shutil.copytree(DEFAULT_DATASET, tmp_path / "d")
    before = pd.read_csv(copy / "arms.csv", keep_default_na=False, dtype=str)
    edit_one_outcome(copy, "Tb_N")
    after = pd.read_csv(copy / "arms.csv", keep_default_na=False, dtype=str)
    changed = (before != after).any(axis=1)
    assert changed.sum() == 1 and set(after.loc[changed, "outcome"]) == {"Tb_N"}
    row = changed.idxmax()
    assert float(after.at[row, "mean"]) == float(before.at[row, "mean"]) * 1.01


def _result(brms: dict) -> dict:
    run = {"wall_seconds": 100.0, "peak_rss_mib": 600.0, "peak_rss_tree_mib": 1500.0, "exit_code": 0}
    return {
        "machine": {"cpu": "x", "cores": 2, "memory_mib": 1, "python": "3.12", "load_average_1min": 0.0},
        "cold": run,
        "warm": run | {"wall_seconds": 2.0},
        "edited": {"outcome outside (X)": run | {"wall_seconds": 30.0}},
        "brms": brms,
        "bayesmeta": {"available": False, "reason": "R package bayesmeta is not installed"},
        "fast_suite": {"wall_seconds": 160.0, "summary": "10 passed"},
        "univariate_fit": {
            "sampling_seconds": 0.1,
            "compile_seconds": 5.0,
            "pymc_sampler_sampling_seconds": 1.0,
            "pymc_sampler_total_seconds": 1.5,
        },
    }


def test_target_ratios_and_table():
    measured = _result({"available": True, "wall_seconds": 80.0})
    r = ratios(measured)
    assert r["cold_over_brms"] == 1.25 and r["warm_over_cold"] == 0.02 and r["suite_over_brms"] == 2.0
    assert r["edited_over_cold"] == {"outcome outside (X)": 0.3}
    assert r["exact_speedup_over_bayesmeta"] is None
    table = markdown(measured)
    assert f"≤ {TARGETS['cold_over_brms']} (**not met**)" in table  # 1.25 > 0.5
    assert f"≤ {TARGETS['warm_over_cold']} (met)" in table
    assert "not measured (R package bayesmeta is not installed)" in table
    assert "1500 MiB (600 MiB)" in table


def test_without_r_the_ratios_say_not_measured():
    table = markdown(_result({"available": False, "reason": "Rscript is not installed"}))
    assert "not measured (Rscript is not installed)" in table
    assert ratios(_result({"available": False}))["cold_over_brms"] is None


def test_the_suite_is_timed_with_the_readmes_test_command():
    args = readme_pytest_args(Path(__file__).resolve().parents[1] / "README.md")
    assert "-m" not in args[:1] and args[:2] == ["-n", "2"], args
