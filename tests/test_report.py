"""``evmeta run`` report: files complete, provenance banner and failed-fit flags at the top, HTML in a real browser."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import tempfile

import pytest

from analysis.fitting.sampling import SamplerSettings
from analysis.report.markdown import build_report_markdown
from analysis.report.write import write_run_report
from analysis.results.diagnostics import Diagnostics
from analysis.run.pipeline import run_analysis
from tests.helpers import write_dataset

# 4 chains: the fixture's Tb_Sp has k = 1, whose (mu, tau) posterior samples at ~20-35% efficiency
# (PyMC and nutpie alike), so 2 x 500 draws (and 2 x 1000 after the retry) can miss ESS >= 400.
SAMPLER = SamplerSettings(draws=500, tune=500, chains=4)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_and_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    run = run_analysis(write_dataset(root), seed=3, sampler=SAMPLER, workers=1, use_cache=False)
    out = write_run_report(run, root / "reports", elapsed=1.0)
    return run, out


@pytest.fixture(scope="module")
def exact_run_and_report(tmp_path_factory):
    """The same dataset through ``evmeta run --engine exact``: no NUTS compile, so it stays in the fast suite."""
    root = tmp_path_factory.mktemp("exact_report")
    run = run_analysis(write_dataset(root), seed=3, engine="exact", workers=1, use_cache=False)
    out = write_run_report(run, root / "reports", elapsed=1.0)
    return run, out


def test_exact_engine_report_files_and_links(exact_run_and_report):
    run, out = exact_run_and_report
    for name in ("report.md", "report.html", "manifest.json", "tables/pooled_summary.csv", "fits/exact.json"):
        assert (out / name).is_file(), name
    for oid in run.outcomes:
        for stem in ("forest", "prior_grid", "compare"):
            assert (out / "figures" / f"{stem}_{oid}.svg").stat().st_size > 5_000, (stem, oid)
    text = (out / "report.md").read_text()
    assert text.index("SIMULATED DATA") < text.index("## Conclusions") < text.index("## Methods")
    links = re.findall(r"\]\((figures/[^)]+)\)", text)
    assert links and all((out / src).is_file() for src in links), links
    assert not list(out.parent.glob(".reports.tmp-*"))


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_report_files_complete(run_and_report):
    run, out = run_and_report
    for name in (
        "report.md",
        "report.html",
        "manifest.json",
        "tables/effects.csv",
        "tables/pooled_summary.csv",
        "tables/comparison.csv",
        "tables/ppc_statistics.csv",
        "tables/power_scaling.csv",
        "tables/prior_grid.csv",
        "fits/nuts.json",
        "fits/exact.json",
        "figures/risk_of_bias.svg",
        "figures/pooled_summary.svg",
    ):
        assert (out / name).is_file(), name
    for oid in run.outcomes:
        for stem in ("forest", "ppc", "ppc_stats", "psense", "prior_grid", "compare"):
            assert (out / "figures" / f"{stem}_{oid}.svg").stat().st_size > 5_000, (stem, oid)
        assert (out / "posteriors" / f"{oid}.nc").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest) >= {
        "dataset",
        "packages",
        "git_revision",
        "seeds",
        "priors",
        "sampler",
        "run_time_seconds",
        "fits",
    }
    assert len(manifest["dataset"]["sha256"]) == 64 and manifest["packages"]["pymc"]
    assert not list(out.parent.glob(".reports.tmp-*"))  # staging folder gone


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_report_markdown_states_provenance_priors_intervals(run_and_report):
    run, out = run_and_report
    text = (out / "report.md").read_text()
    assert text.index("SIMULATED DATA") < text.index("## Conclusions") < text.index("## Methods")
    for needle in (
        "μ ~ normal:0:3",
        "τ ~ halfnormal:1",
        "95% equal-tailed (eti95)",
        "frequentist REML",
        "frequentist DL",
        "Model checks",
        "## Conclusions",
        "What this means for the next experiment",
        "Prior sensitivity",
        "Risk of bias (SYRCLE)",
        "Convergence diagnostics",
    ):
        assert needle in text, needle
    # every image the report links exists
    for src in re.findall(r"\]\((figures/[^)]+)\)", text):
        assert (out / src).is_file(), src


@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_failed_fit_is_flagged_at_the_top(run_and_report):
    run, _ = run_and_report
    oid, artifacts = next(iter(run.outcomes.items()))
    failed = Diagnostics(r_hat_max=1.2, ess_bulk_min=50, ess_tail_min=40, divergences=7)
    # the primary fit is the default (arm-level) model where it ran, else the normal-likelihood NUTS fit
    which = "arm" if artifacts.arm is not None else "nuts"
    bad = dataclasses.replace(getattr(artifacts, which), diagnostics=failed)
    broken = dataclasses.replace(run, outcomes={**run.outcomes, oid: dataclasses.replace(artifacts, **{which: bad})})
    text = build_report_markdown(broken)
    assert broken.failed == [oid]
    assert text.index("CONVERGENCE FAILURE") < text.index("SIMULATED DATA") < text.index("## Methods")
    assert "**FAILED**" in text


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)"
)
@pytest.mark.slow  # NUTS sampling: compiles a model (issue 19: real sampling under -m slow)
def test_html_report_in_headless_chromium(exact_run_and_report):
    """Load report.html in a real browser: every figure (SVG, embedded) must be decoded and visible."""
    _, out = exact_run_and_report
    probe = out.parent / "probe.html"
    script = (
        "<script>window.addEventListener('load',()=>{const r=[...document.images].map(i=>{"
        "const b=i.getBoundingClientRect();"
        "const s=getComputedStyle(i);return {alt:i.alt,ok:i.complete&&i.naturalWidth>0,w:b.width,h:b.height,"
        "vis:s.visibility!=='hidden'&&s.display!=='none'}});const p=document.createElement('pre');p.id='probe';"
        "p.textContent=JSON.stringify(r);document.body.appendChild(p);});</script>"
    )
    probe.write_text((out / "report.html").read_text().replace("</body>", script + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                probe.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert match, done.stderr[-2000:]
    images = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    linked = re.findall(r"!\[", (out / "report.md").read_text())
    assert len(images) == len(linked) > 5
    for image in images:
        assert image["ok"] and image["vis"] and image["w"] > 100 and image["h"] > 50, image


def test_a_run_keeps_other_reports_and_files_in_its_folder(tmp_path):
    """``evmeta run`` into reports/ must not delete reports/fst_martins2025/ or benchmark.json (seen once)."""
    from analysis.report.write import _keep_foreign_files

    out, stage = tmp_path / "reports", tmp_path / "stage"
    for rel in ("benchmark.json", "report.md", "figures/forest_BMD.png", "other/report.md", "other/figures/a.png"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(rel)
    stage.mkdir()
    _keep_foreign_files(out, stage)
    kept = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    assert kept == ["benchmark.json", "other/figures/a.png", "other/report.md"]


@pytest.mark.parametrize("which", ["exact_run_and_report", pytest.param("run_and_report", marks=pytest.mark.slow)])
def test_conclusions_have_one_rated_row_per_outcome(which, request):
    run, out = request.getfixturevalue(which)
    text = (out / "report.md").read_text()
    block = text[text.index("## Conclusions") : text.index("## Methods")]
    rows = [line for line in block.splitlines() if line.startswith("| ") and not line.startswith("| outcome")]
    assert len(rows) == len(run.outcomes)
    levels = ("**high**", "**moderate**", "**low**", "**very low**")
    for oid, row in zip(run.outcomes, rows, strict=True):
        assert row.startswith(f"| {oid}: ") and sum(level in row for level in levels) == 1
        fit = run.outcomes[oid].primary
        assert f"μ {fit.summaries['mu']['mean']:.2f}" in row  # traceable to the fit's numbers
