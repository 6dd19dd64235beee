"""Property: ``evmeta run`` and ``evmeta fit --all`` complete on every dataset that passes validation.

Datasets are generated with 1 to 6 studies, several outcomes (some reported by no study or by one
or two studies), treatment arms sharing a control, studies with only sham and control arms for an
outcome, and moderators. Every analysis that cannot run on such data must be skipped with a
one-line reason in the report and the JSON, and the exit code must stay 0.

The fast tests use the exact engine (``--engine exact``: seconds per dataset); the slow twin runs
the whole pipeline with NUTS.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path

import matplotlib
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from analysis.cli import main
from analysis.dataset.problems import errors
from analysis.dataset.validate import validate_dataset
from tests.test_fuzz_dataset import Case, Table, studies_tables, toml_text, valid_arm_cases, write_case

matplotlib.use("Agg")

SETTINGS = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
}
OUTCOMES = {"BMD": 1, "Tb_Sp": -1, "Ct_Th": 1}
ARM_COLUMNS = ["study", "arm", "role", "outcome", "mean", "sd", "sem", "n", "control_arm"]


@st.composite
def study_arm_rows(draw: Callable, study: str, outcome: str) -> list[dict[str, str]]:
    """One study's rows for one outcome: a control with 0-3 treatment arms (sharing it) and maybe a sham."""
    control_mean = draw(st.floats(5.0, 100.0))
    rows = [{"arm": "ovx", "role": "control", "mean": control_mean}]
    rows += [
        {"arm": f"ev{j}", "role": "treatment", "mean": control_mean * draw(st.floats(0.5, 2.0))}
        for j in range(draw(st.integers(0, 3)))
    ]
    if draw(st.booleans()):
        rows.append({"arm": "sham", "role": "sham", "mean": control_mean * 1.3})
    out = []
    for row in rows:
        sd = f"{draw(st.floats(0.05, 0.5)) * row['mean']:.4g}"
        use_sd = draw(st.booleans())
        out.append(
            {
                "study": study,
                "outcome": outcome,
                "arm": row["arm"],
                "role": row["role"],
                "mean": f"{row['mean']:.4g}",
                "sd": sd if use_sd else "",
                "sem": "" if use_sd else sd,
                "n": str(draw(st.integers(2, 15))),
                "control_arm": "",
            }
        )
    return out


@st.composite
def pipeline_cases(draw: Callable) -> Case:
    """A valid arm-level dataset with plausible numbers and an awkward structure (see the module docstring)."""
    k = draw(st.integers(1, 6))
    ids = [f"S{i}" for i in range(k)]
    rows = []
    for sid in ids:
        for oid in draw(st.lists(st.sampled_from(sorted(OUTCOMES)), unique=True, max_size=3)):
            rows += draw(study_arm_rows(sid, oid))
    assume(any(r["role"] == "treatment" for r in rows))
    table = Table(ARM_COLUMNS, [[r[c] for c in ARM_COLUMNS] for r in rows])
    return Case(toml=toml_text(OUTCOMES), studies=draw(studies_tables(ids)), data_name="arms.csv", data=table)


def _valid_folder(case: Case, root: Path) -> Path:
    folder, _ = write_case(case, root)
    assume(not errors(validate_dataset(folder)))
    return folder


def check_run(folder: Path, out: Path, engine: str) -> None:
    """``evmeta run`` exits 0 and reports every declared outcome as analysed or not analysed, with reasons."""
    code = main(["run", str(folder), "--out", str(out), "--workers", "1", "--no-cache", "--engine", engine])
    assert code == 0
    report = (out / "report.md").read_text(encoding="utf-8")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    declared = set(toml_outcomes(folder))
    analysed = set(manifest["fits"])
    missing = declared - analysed
    assert not missing or "Outcomes not analysed:" in report
    for oid in missing:
        assert f"{oid} (no study reports this outcome)" in report
    skipped_path = out / "fits" / "skipped.json"
    skipped = json.loads(skipped_path.read_text(encoding="utf-8"))["fits"] if skipped_path.exists() else {}
    for oid, reasons in skipped.items():
        assert oid in analysed
        for reason in reasons.values():
            assert reason and "\n" not in reason and f"Not run: {reason}." in report


def toml_outcomes(folder: Path) -> list[str]:
    """Outcome ids declared in the dataset's dataset.toml."""
    return list(tomllib.loads((folder / "dataset.toml").read_text(encoding="utf-8"))["outcomes"])


def check_fit_all(folder: Path, out: Path, engine: str) -> None:
    """``evmeta fit --all`` for each per-outcome model exits 0; outcomes it cannot fit are listed with reasons."""
    for model in ("random-effects", "small-study"):
        json_path = out / f"{model}.json"
        code = main(["fit", str(folder), "--all", "--model", model, "--engine", engine, "--json", str(json_path)])
        assert code == 0
        written = json.loads(json_path.read_text(encoding="utf-8"))
        for oid, reason in written.get("skipped", {}).items():
            assert oid not in written["fits"] and reason


@pytest.mark.parametrize("strategy_name", ["pipeline", "fuzz"])
def test_run_and_fit_all_complete_with_the_exact_engine(tmp_path_factory, strategy_name):
    strategy = pipeline_cases() if strategy_name == "pipeline" else valid_arm_cases()

    @settings(max_examples=3 if strategy_name == "pipeline" else 2, derandomize=True, **SETTINGS)
    @given(strategy)
    def run(case: Case) -> None:
        root = tmp_path_factory.mktemp("case")
        folder = _valid_folder(case, root)
        check_run(folder, root / "report", "exact")
        check_fit_all(folder, root, "exact")

    run()


@pytest.mark.slow
def test_run_and_fit_all_complete_with_nuts(tmp_path_factory):
    @settings(max_examples=8, derandomize=False, **SETTINGS)
    @given(pipeline_cases())
    def run(case: Case) -> None:
        root = tmp_path_factory.mktemp("case")
        folder = _valid_folder(case, root)
        check_run(folder, root / "report", "nuts")
        check_fit_all(folder, root, "nuts")

    run()


def test_k_two_outcome_is_reported_with_its_skipped_analyses(tmp_path):
    """The README's case: an outcome reported by 2 studies (influence and small-study models need 3)."""
    rows = [
        ["S0", "ovx", "control", "BMD", "10", "2", "", "8", ""],
        ["S0", "ev0", "treatment", "BMD", "14", "2", "", "8", ""],
        ["S1", "ovx", "control", "BMD", "11", "", "0.8", "6", ""],
        ["S1", "ev0", "treatment", "BMD", "13", "", "0.9", "6", ""],
        ["S1", "ev1", "treatment", "BMD", "15", "", "0.7", "7", ""],
    ]
    studies = Table(
        ["study", "species", "duration_weeks", "rob_blinding"],
        [["S0", "rat", "4", "low"], ["S1", "mouse", "8", "high"]],
    )
    case = Case(toml=toml_text({"BMD": 1}), studies=studies, data_name="arms.csv", data=Table(ARM_COLUMNS, rows))
    folder, _ = write_case(case, tmp_path)
    check_run(folder, tmp_path / "report", "exact")
    skipped = json.loads((tmp_path / "report" / "fits" / "skipped.json").read_text(encoding="utf-8"))["fits"]["BMD"]
    assert "k = 2" in skipped["influence analysis"] and "k = 2" in skipped["small-study models"]
