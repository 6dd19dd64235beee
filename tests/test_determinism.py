"""Determinism (GitHub issue 9): same seed, same bytes; another seed, the same answer within MC error.

Two complete runs of the pipeline (``run_analysis`` + ``write_run_report``) with the same seed
are written to two folders, and every file under ``tables/`` and ``fits/`` must be identical
byte for byte. The second run uses two worker processes, the first none, so the test also
shows that the numbers do not depend on where an outcome is computed.

Not compared, on purpose:

* ``manifest.json`` records wall-clock run times (``run_time_seconds``, ``timings_seconds``);
* ``report.md`` / ``report.html`` print those times too (and embed the figures);
* ``figures/``: SVG/PNG bytes depend on the matplotlib/freetype build and SVG ids, not on the
  numbers (they are drawn from the tables compared here);
* ``posteriors/*.nc``: the NetCDF/HDF5 container stores creation timestamps (PyMC's
  ``created_at`` attribute), so equal draws do not give equal bytes.

The draws themselves are covered: ``fits/nuts.json`` holds the NUTS summaries and
diagnostics, and ``tables/`` the study-level and check tables, all to 10 significant digits.

With a different seed the NUTS posterior mean of mu must change (the seed is used) but only
within Monte Carlo error: ``|mean_1 - mean_2| < 5 * sqrt(MCSE_1^2 + MCSE_2^2)`` (``az.mcse``).

The two pipeline runs take a few minutes, so they are ``slow``; the default run checks the same
property on single fits (same seed: identical JSON text and CSV bytes).
"""

from __future__ import annotations

import math
from pathlib import Path

import arviz as az
import pytest

from analysis.dataset.load import load_dataset
from analysis.fitting.random_effects import fit_random_effects
from analysis.fitting.sampling import SamplerSettings
from analysis.report.files import json_text, pooled_table
from analysis.report.write import write_run_report
from analysis.run.pipeline import run_analysis
from tests.helpers import TOML, write_dataset

SAMPLER = SamplerSettings(draws=300, tune=300, chains=2)
#: The helper dataset plus an outcome that is declared but reported by no study.
TOML_WITH_UNREPORTED = TOML + '\n[outcomes.BV_TV]\nlabel = "Bone volume fraction"\nunit = "%"\ndirection = 1\n'


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("determinism")
    dataset = write_dataset(root, toml=TOML_WITH_UNREPORTED)
    outs = []
    for name, workers in (("first", 1), ("second", 2)):
        run = run_analysis(dataset, seed=7, sampler=SAMPLER, workers=workers, use_cache=False)
        outs.append((run, write_run_report(run, root / name, elapsed=0.0)))
    return outs


@pytest.mark.slow
def test_same_seed_gives_byte_identical_tables_and_json(two_runs):
    (_, first), (_, second) = two_runs
    for sub in ("tables", "fits"):
        a, b = _files(first / sub), _files(second / sub)
        assert a and sorted(a) == sorted(b)
        different = [name for name in a if a[name] != b[name]]
        assert not different, f"{sub}/ files differ between two runs with the same seed: {different}"
    assert (first / "tables" / "pooled_summary.csv").is_file() and (first / "fits" / "nuts.json").is_file()


@pytest.mark.slow
def test_unreported_outcome_is_skipped_and_said_so(two_runs):
    (run, folder), _ = two_runs
    assert run.skipped == {"BV_TV": "no study reports this outcome"}
    assert "BV_TV" not in run.outcomes
    assert "Outcomes not analysed: BV_TV (no study reports this outcome)" in (folder / "report.md").read_text()


def _mu_mean_and_mcse(result) -> tuple[float, float]:
    mcse = az.mcse(result.posterior, var_names=["mu"], method="mean")
    node = mcse["posterior"] if "posterior" in mcse.children else mcse
    return float(result.posterior.posterior["mu"].mean()), float(node["mu"])


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    """NUTS fits of BMD with seeds 1, 1 and 2."""
    dataset = load_dataset(write_dataset(tmp_path_factory.mktemp("seeds")))
    return [fit_random_effects(dataset, "BMD", engine="nuts", seed=seed, sampler=SAMPLER) for seed in (1, 1, 2)]


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_same_seed_gives_identical_fit_json_and_csv_bytes(fits):
    first, again, _ = fits
    assert json_text(first.to_dict()) == json_text(again.to_dict())
    as_csv = [
        pooled_table([f]).to_csv(index=False, float_format="%.10g") + f.studies.to_csv(index=False)
        for f in (first, again)
    ]
    assert as_csv[0] == as_csv[1]
    assert first.posterior.posterior["mu"].equals(again.posterior.posterior["mu"])


def test_other_seed_differs_only_within_monte_carlo_error(fits):
    first, _, other = fits
    (m1, se1), (m2, se2) = _mu_mean_and_mcse(first), _mu_mean_and_mcse(other)
    assert m1 != m2, "the seed changed nothing"
    assert abs(m1 - m2) < 5 * math.hypot(se1, se2), (m1, m2, se1, se2)
