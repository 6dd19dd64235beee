"""Benchmark of evmeta on the default dataset: ``python -m analysis.studies.benchmark`` (or ``evmeta benchmark``).

Measures, on this machine and in one run, so that the targets of issue 19 are ratios (absolute
times differ about 2x between machines of the same kind):

* ``evmeta run`` on a copy of the default dataset as child processes: cold (empty result cache),
  unchanged rerun, and reruns after editing one outcome's rows (one outside the multivariate model,
  then one inside it), each with its wall time and peak memory summed over its process tree;
* where the cold run's time went (its manifest: fits, compile, figures, multivariate job);
* R's brms compiling and sampling one random-effects meta-analysis of one outcome in a fresh
  ``Rscript`` (``r/brms_one_fit.R``, a copy of ``../shared/reference/brms_one_fit.R``) and R's
  ``bayesmeta()`` per outcome against the exact engine on the same effects (``r/bayesmeta_timing.R``),
  when ``Rscript`` and those packages are installed (otherwise recorded as not measured, with why);
* the fast test suite (the README's test command) as a child process;
* compile against sampling time of one univariate fit (nutpie, and PyMC's own sampler);
* the multivariate model over all outcomes (``evmeta fit --model multivariate --outcomes all``) as a
  child process with its own peak memory against :data:`MULTIVARIATE_ALL_WALL_LIMIT_S` and
  :data:`MULTIVARIATE_ALL_RSS_LIMIT_MIB`, with this machine's compile cache and an empty one;
* one bias-averaged fit per flagship outcome against R's RoBMA default ensemble on the same data
  (:func:`bias_averaged_vs_robma`; RoBMA's wall times are those recorded in
  ``../shared/reference/robma_reference.json``, not re-measured: RoBMA and JAGS are not installed here).

``--only bias-averaged`` runs that part alone and updates its key in the JSON; ``--no-suite`` skips
the test suite. Writes ``reports/benchmark.json`` (with the target ratios under ``ratios``) and
prints a Markdown table for the README. Timings are measured here, never asserted in tests.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from analysis.config import DEFAULT_DATASET, REPORTS_DIR

#: Limits of the all-outcome multivariate fit on this machine (2 cores, shared): wall time and peak RSS.
MULTIVARIATE_ALL_WALL_LIMIT_S = 120.0
MULTIVARIATE_ALL_RSS_LIMIT_MIB = 1536.0
#: Address-space cap of that child process, so that a regression fails the child (MemoryError) instead of
#: exhausting a machine shared with other work (the fit maps ~2.4 GB of address space; RSS is what is measured).
CHILD_ADDRESS_SPACE_BYTES = 8 * 2**30
#: The child is killed after this long (a measurement, not the limit: the limit is checked on the result).
CHILD_TIMEOUT_S = 900.0
#: Seconds between two reads of a child's memory high-water mark.
HWM_POLL_S = 0.02
#: The memory summed over a child's process tree is read every this many polls (a scan of /proc: ~2.5 ms).
TREE_POLL_EVERY = 10


def machine() -> dict:
    """CPU model, core count, memory and Python of this machine."""
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    mem = (
        next(
            (
                int(line.split()[1]) // 1024
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")
            ),
            None,
        )
        if Path("/proc/meminfo").exists()
        else None
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1min": os.getloadavg()[0],
    }


def timed_run(dataset: Path, out: Path, cache_dir: Path) -> dict:
    """Run ``evmeta run`` on ``dataset`` as a child process: wall time, exit code and peak memory.

    ``peak_rss_mib`` is the parent process's own peak, ``peak_rss_tree_mib`` the largest memory
    summed over it and its worker processes (:func:`run_measured`).
    """
    env = {**os.environ, "EVMETA_CACHE_DIR": str(cache_dir)}
    measured = run_measured([sys.executable, "-m", "analysis.cli", "run", str(dataset), "--out", str(out)], env=env)
    if measured["exit_code"] not in (0, 3):
        raise RuntimeError(f"evmeta run failed ({measured['exit_code']}):\n{measured['stderr_tail']}")
    return {k: v for k, v in measured.items() if k not in ("stderr_tail", "stdout_tail", "timed_out")}


def compile_vs_sampling() -> dict:
    """One univariate NUTS fit (4 chains x 1000 draws, tune 1000): compile once, then fit on the compiled model.

    nutpie compiles the BMD model (``compile_seconds``); the Tb_N model has the same structure,
    so its fit reuses that compiled model with Tb_N's data swapped in (``sampling_seconds``
    includes the fingerprint and the data swap). PyMC's own sampler on the same model is timed
    for comparison (its compile is repeated by every ``pm.sample`` call).
    """
    import pymc as pm

    from analysis.dataset.effects import compute_effects, outcome_effects
    from analysis.dataset.load import load_dataset
    from analysis.fitting import nuts
    from models.priors import PriorSet
    from models.random_effects import build_random_effects_model

    dataset, priors = load_dataset(DEFAULT_DATASET), PriorSet()
    table = compute_effects(dataset)

    def model(outcome: str) -> pm.Model:
        effects = outcome_effects(dataset, table, outcome)
        return build_random_effects_model(
            effects["yi"].to_numpy(),
            effects["vi"].to_numpy(),
            study=list(effects["study"]),
            tau_prior=priors.tau,
            beta_priors=[priors.mu],
        )

    nuts.clear_cache()
    started = time.perf_counter()
    nuts.compiled_model(model("BMD"))
    compiled = time.perf_counter()
    nuts.sample_nuts(model("Tb_N"), draws=1000, tune=1000, chains=4, target_accept=0.95, seed=1)
    sampled = time.perf_counter()
    with model("BMD"):
        idata = pm.sample(
            1000,
            tune=1000,
            chains=4,
            cores=1,
            random_seed=1,
            progressbar=False,
            quiet=True,
            compute_convergence_checks=False,
            target_accept=0.95,
            nuts_sampler="pymc",
        )
    pymc_total = time.perf_counter() - sampled
    return {
        "compile_seconds": round(compiled - started, 3),
        "sampling_seconds": round(sampled - compiled, 3),
        "pymc_sampler_total_seconds": round(pymc_total, 3),
        "pymc_sampler_sampling_seconds": round(float(idata.posterior.attrs["sampling_time"]), 3),
    }


def exact_per_outcome(repeats: int = 20) -> dict:
    """Per outcome of the default dataset: median ms of an exact-engine fit with all summaries, and its μ mean."""
    from analysis.dataset.effects import compute_effects
    from analysis.dataset.load import load_dataset
    from analysis.fitting.random_effects import fit_random_effects

    dataset = load_dataset(DEFAULT_DATASET)
    table = compute_effects(dataset)
    out = {}
    for outcome in dataset.outcomes:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fit = fit_random_effects(dataset, outcome, engine="exact", table=table)
            times.append(time.perf_counter() - started)
        out[outcome] = {"ms": round(1000 * sorted(times)[len(times) // 2], 2), "mu_mean": fit.summaries["mu"]["mean"]}
    return out


#: R scripts the benchmark runs (copies of ``../shared/reference/brms_one_fit.R`` and a bayesmeta timer).
R_SCRIPTS = Path(__file__).resolve().parent / "r"
#: The outcome brms fits: the flagship's first.
BRMS_OUTCOME = "BMD"


def r_package_available(package: str) -> str | None:
    """None if ``Rscript`` can load ``package``; otherwise why not (for the benchmark's record)."""
    if shutil.which("Rscript") is None:
        return "Rscript is not installed"
    done = subprocess.run(
        ["Rscript", "-e", f"suppressMessages(library({package}))"], capture_output=True, text=True, check=False
    )
    return None if done.returncode == 0 else f"R package {package} is not installed ({done.stderr.strip()[-200:]})"


def write_effects_csv(path: Path) -> Path:
    """The default dataset's per-study effects (``study, outcome, yi, vi``), as the exact engine sees them."""
    import pandas as pd

    from analysis.dataset.effects import compute_effects, outcome_effects
    from analysis.dataset.load import load_dataset

    dataset = load_dataset(DEFAULT_DATASET)
    table = compute_effects(dataset)
    frames = [outcome_effects(dataset, table, o).assign(outcome=o) for o in dataset.outcomes]
    pd.concat(frames)[["study", "outcome", "yi", "vi"]].to_csv(path, index=False)
    return path


def brms_one_fit(effects_csv: Path, outcome: str = BRMS_OUTCOME) -> dict:
    """Wall time of R's brms compiling and sampling one random-effects meta-analysis, in a fresh ``Rscript``.

    ``brms_one_fit.R``: ``brm(yi | se(sei) ~ 1 + (1 | study))``, 4 chains x (1000 warm-up + 1000 draws).
    Returns ``available: False`` with the reason when R or brms is missing.
    """
    missing = r_package_available("brms")
    if missing:
        return {"available": False, "reason": missing}
    measured = run_measured(["Rscript", str(R_SCRIPTS / "brms_one_fit.R"), str(effects_csv), outcome])
    found = re.search(r"brms k=(\d+) mu=(-?[\d.]+) total_in_R=([\d.]+)", measured["stdout_tail"])
    if measured["exit_code"] != 0 or found is None:
        return {"available": False, "reason": f"brms failed: {measured['stderr_tail'][-500:]}"}
    return {
        "available": True,
        "outcome": outcome,
        "k": int(found.group(1)),
        "mu_mean": float(found.group(2)),
        "wall_seconds": measured["wall_seconds"],
        "seconds_inside_r": float(found.group(3)),
        "peak_rss_mib": measured["peak_rss_tree_mib"],
    }


def bayesmeta_vs_exact(effects_csv: Path, repeats: int = 3) -> dict:
    """Per outcome: median time of R's ``bayesmeta()`` and of evmeta's exact engine on the same effects and priors.

    Both are timed inside their own process (no start-up): bayesmeta the median of ``repeats`` fits (it
    takes seconds per fit), evmeta the median of 20, each fit with all summaries (evmeta:
    :func:`~analysis.fitting.random_effects.fit_random_effects`, engine ``exact``).
    The posterior means of μ are recorded as a check that both fitted the same model.
    """
    missing = r_package_available("bayesmeta")
    if missing:
        return {"available": False, "reason": missing}
    measured = run_measured(["Rscript", str(R_SCRIPTS / "bayesmeta_timing.R"), str(effects_csv), str(repeats)])
    found = re.findall(r"bayesmeta (\S+) k=(\d+) median_s=([\d.]+) mu=(-?[\d.]+)", measured["stdout_tail"])
    if measured["exit_code"] != 0 or not found:
        return {"available": False, "reason": f"bayesmeta failed: {measured['stderr_tail'][-500:]}"}
    ours = exact_per_outcome()
    rows = {}
    for oid, k, seconds, mu in found:
        rows[oid] = {
            "k": int(k),
            "bayesmeta_ms": round(1000 * float(seconds), 2),
            "evmeta_exact_ms": ours[oid]["ms"],
            "speedup": round(1000 * float(seconds) / ours[oid]["ms"], 1),
            "mu_mean_bayesmeta": float(mu),
            "mu_mean_evmeta": ours[oid]["mu_mean"],
        }
    return {"available": True, "outcomes": rows, "min_speedup": min(r["speedup"] for r in rows.values())}


def readme_pytest_args(readme: Path) -> list[str]:
    """The arguments of ``python -m pytest`` in the README's test command (the line after ``<!-- test-command -->``)."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    command = next(lines[i + 2] for i, line in enumerate(lines) if line.strip() == "<!-- test-command -->")
    return shlex.split(command.split("-m pytest", 1)[1])


def fast_suite() -> dict:
    """The README's test command (the fast suite) as a child process, quiet and without a cache folder."""
    root = Path(__file__).resolve().parents[2]
    args = [*readme_pytest_args(root / "README.md"), "-q", "-p", "no:cacheprovider"]
    measured = run_measured([sys.executable, "-m", "pytest", *args], cwd=root, timeout=3600)
    summary = [line for line in measured["stdout_tail"].splitlines() if " passed" in line or " failed" in line]
    return {
        "command": " ".join(["python -m pytest", *args]),
        "wall_seconds": measured["wall_seconds"],
        "exit_code": measured["exit_code"],
        "summary": summary[-1].strip("= ") if summary else "",
        "peak_rss_tree_mib": measured["peak_rss_tree_mib"],
    }


def edit_one_outcome(dataset: Path, outcome: str) -> None:
    """Change one arm mean of ``outcome`` in a copy of a dataset by 1% (its rows only; other outcomes untouched)."""
    import pandas as pd

    path = dataset / "arms.csv"
    arms = pd.read_csv(path, keep_default_na=False, dtype=str)
    row = arms.index[(arms["outcome"] == outcome) & (arms["mean"] != "")][0]
    arms.loc[row, "mean"] = repr(float(arms.loc[row, "mean"]) * 1.01)
    arms.to_csv(path, index=False)


#: RoBMA reference numbers (with their recorded wall times) and the target ratio of the issue.
ROBMA_REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "robma_reference.json"
BIAS_AVERAGED_RATIO_LIMIT = 1.0 / 20.0


def bias_averaged_vs_robma(repeats: int = 3, reference: Path = ROBMA_REFERENCE) -> dict:
    """Median wall time of one bias-averaged fit per flagship outcome, on RoBMA's data, against RoBMA's time.

    The data are those RoBMA was given (first comparison per study, benefit-oriented d, its SE and
    group sizes), so both fit the same studies. Returns per outcome evmeta's seconds, RoBMA's
    recorded seconds (``null`` where its ensemble did not finish) and their ratio.
    """
    import pandas as pd

    from analysis.dataset.load import Outcome
    from analysis.fitting.bias_averaged import fit_bias_averaged_effects

    if not reference.exists():
        return {"available": False, "reason": f"{reference} not found"}
    outcomes = json.loads(reference.read_text())["flagship"]["outcomes"]
    rows = {}
    for oid, entry in outcomes.items():
        data = entry["data"]
        effects = pd.DataFrame(
            {
                "study": data["study"],
                "yi": data["d"],
                "vi": [s**2 for s in data["se"]],
                "n_treatment": data["n_treatment"],
                "n_control": data["n_control"],
            }
        )
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fit_bias_averaged_effects(effects, outcome=Outcome(oid, oid, "", 1), measure="SMD")
            times.append(time.perf_counter() - started)
        ours = sorted(times)[len(times) // 2]
        robma = (entry.get("default_ensemble") or {}).get("wall_s")
        rows[oid] = {
            "k": entry["k"],
            "evmeta_seconds": round(ours, 3),
            "robma_seconds": None if robma is None else round(robma, 1),
            "ratio": None if robma is None else round(ours / robma, 5),
        }
    ratios = [r["ratio"] for r in rows.values() if r["ratio"] is not None]
    return {
        "available": True,
        "outcomes": rows,
        "max_ratio": max(ratios) if ratios else None,
        "ratio_limit": BIAS_AVERAGED_RATIO_LIMIT,
        "robma_machine": "RoBMA's times were recorded by make_robma_reference.R on a 2-core machine shared with "
        "another job (load 2-4); evmeta's are measured here, so the ratio is indicative, not same-run",
    }


def _cap_address_space() -> None:
    """In the child, before exec: cap its virtual address space at :data:`CHILD_ADDRESS_SPACE_BYTES` (or lower)."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = CHILD_ADDRESS_SPACE_BYTES if hard == resource.RLIM_INFINITY else min(hard, CHILD_ADDRESS_SPACE_BYTES)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _watch_hwm(pid: int, peak_kib: list[int], done: threading.Event) -> None:
    """Keep ``peak_kib[0]`` at the child's ``VmHWM`` and ``peak_kib[1]`` at the largest RSS summed over its tree (KiB).

    Runs until the child exits or ``done`` is set.
    """
    status, polls = Path(f"/proc/{pid}/status"), 0
    while not done.is_set():
        try:
            text = status.read_text()
        except OSError:  # the child is gone (or there is no /proc)
            return
        found = re.search(r"^VmHWM:\s+(\d+) kB", text, flags=re.M)
        if found is None:  # a zombie has no memory lines: the child has exited
            return
        peak_kib[0] = max(peak_kib[0], int(found.group(1)))
        if polls % TREE_POLL_EVERY == 0:
            peak_kib[1] = max(peak_kib[1], tree_rss_kib(pid))
        polls += 1
        done.wait(HWM_POLL_S)


def _parents() -> dict[int, int]:
    """Parent pid of every process visible in ``/proc``."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                out[int(entry.name)] = int(stat.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError):  # the process exited while being read
            continue
    return out


def tree_rss_kib(pid: int) -> int:
    """Resident memory (KiB) of ``pid`` and all its descendants, summed (0 if ``pid`` is gone)."""
    parents, tree, total = _parents(), {pid}, 0
    grew = True
    while grew:
        found = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= found
        grew = bool(found)
    for member in tree:
        try:
            text = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmRSS:\s+(\d+) kB", text, flags=re.M)
        total += int(found.group(1)) if found else 0
    return total


def run_measured(
    cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = CHILD_TIMEOUT_S, cwd: Path | None = None
) -> dict:
    """Run ``cmd`` as a child process; its wall time, exit code and own peak RSS (not this process's).

    The peak is the high-water mark ``VmHWM`` of the child's own address space (``/proc/<pid>/status``),
    read every 20 ms while it runs: it starts afresh at ``exec``, unlike
    ``wait4``'s ``ru_maxrss``, which also counts the memory of this process copied into the child
    before ``exec`` (measured: a 200 MiB child reported 453 MiB from inside a 450 MiB test process).
    Being a high-water mark, only a peak reached in the child's last 20 ms can be missed.

    Parameters
    ----------
    cmd : list of str
        Command line.
    env : dict, optional
        Environment (default: this process's).
    timeout : float
        Seconds after which the child is killed (``timed_out`` is then True).

    Returns
    -------
    dict
        ``wall_seconds``, ``peak_rss_mib`` (largest resident set of the child process itself, not of
        its own children), ``peak_rss_tree_mib`` (largest resident memory summed over the child and
        its descendants, e.g. ``evmeta run``'s worker processes; polled, so a shorter peak can be
        missed), ``exit_code``, ``timed_out`` and ``stderr_tail`` (last 2000 characters).
    """
    with tempfile.TemporaryFile(mode="w+") as err, tempfile.TemporaryFile(mode="w+") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=err,
            preexec_fn=_cap_address_space,
            start_new_session=True,
        )
        killed, done, peak_kib = threading.Event(), threading.Event(), [0, 0]
        timer = threading.Timer(timeout, lambda: (killed.set(), proc.kill()))
        watcher = threading.Thread(target=_watch_hwm, args=(proc.pid, peak_kib, done), daemon=True)
        timer.start()
        watcher.start()
        try:
            _, status, _ = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            done.set()
            watcher.join()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-2000:]
        out.seek(0)
        stdout_tail = out.read()[-4000:]
    return {
        "wall_seconds": round(wall, 2),
        "peak_rss_mib": round(peak_kib[0] / 1024, 1),
        "peak_rss_tree_mib": round(peak_kib[1] / 1024, 1),
        "stdout_tail": stdout_tail,
        "exit_code": proc.returncode,
        "timed_out": killed.is_set(),
        "stderr_tail": tail,
    }


def multivariate_all_outcomes(seed: int = 1, *, cold_compile_cache: bool = False) -> dict:
    """``evmeta fit`` of the multivariate model over all outcomes of the default dataset, in a child process.

    The child starts cold (its own interpreter, imports, model compile, sampling, θ draws and the
    univariate reference fits), so the wall time is what a user waits for. PyTensor keeps compiled
    code (C modules and numba's cache) on disk across processes: by default the child uses this
    machine's, as a user's command would; ``cold_compile_cache`` gives it an empty one, as on the
    first run after installation (compiling then takes several times longer).

    Parameters
    ----------
    seed : int
        Seed of the fit.
    cold_compile_cache : bool
        Run the child with an empty PyTensor compile directory.

    Returns
    -------
    dict
        :func:`run_measured`'s fields (without ``stderr_tail`` unless the fit failed), the number of
        outcomes and studies, the convergence diagnostics, the limits and ``within_limits``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fit.json"
        cmd = [sys.executable, "-m", "analysis.cli", "fit", str(DEFAULT_DATASET), "--model", "multivariate"]
        # one structure: this measures the largest single model (auto would fit all three in turn)
        cmd += ["--outcomes", "all", "--structure", "unstructured", "--seed", str(seed), "--json", str(out)]
        env = {**os.environ, "EVMETA_CACHE_DIR": str(Path(tmp) / "cache")}
        if cold_compile_cache:
            flags = [f for f in env.get("PYTENSOR_FLAGS", "").split(",") if f]
            env["PYTENSOR_FLAGS"] = ",".join([*flags, f"base_compiledir={Path(tmp) / 'pytensor'}"])
        measured = run_measured(cmd, env=env)
        fit = json.loads(out.read_text()) if out.exists() else {}
    measured.pop("stdout_tail")
    if measured["exit_code"] in (0, 3):
        measured.pop("stderr_tail")
    diagnostics = fit.get("diagnostics", {})
    measured.update(
        {
            "outcomes": len(fit.get("outcomes", [])),
            "studies": fit.get("k"),
            "converged": bool(fit.get("converged", False)),
            "r_hat_max": diagnostics.get("r_hat_max"),
            "ess_bulk_min": diagnostics.get("ess_bulk_min"),
            "divergences": diagnostics.get("divergences"),
            "retried": diagnostics.get("retried"),
            "cold_compile_cache": cold_compile_cache,
            "wall_limit_seconds": MULTIVARIATE_ALL_WALL_LIMIT_S,
            "peak_rss_limit_mib": MULTIVARIATE_ALL_RSS_LIMIT_MIB,
        }
    )
    measured["within_limits"] = (
        measured["exit_code"] in (0, 3)
        and measured["wall_seconds"] <= MULTIVARIATE_ALL_WALL_LIMIT_S
        and measured["peak_rss_mib"] <= MULTIVARIATE_ALL_RSS_LIMIT_MIB
    )
    return measured


#: Benchmark keys of the all-outcome multivariate fit: this machine's compile cache, and an empty one.
MULTIVARIATE_KEYS = ("multivariate_all", "multivariate_all_cold_compile")


def _multivariate_row(mv: dict) -> tuple[str, str, str]:
    """Markdown row (measurement, result, target) of :func:`multivariate_all_outcomes`."""
    cache = "empty compile cache (first run)" if mv["cold_compile_cache"] else "compile cache of earlier runs"
    return (
        f"multivariate model over all {mv['outcomes']} outcomes (`evmeta fit --model multivariate --outcomes all`, "
        f"one process, {cache}): wall / peak memory",
        f"{mv['wall_seconds']:.1f} s / {mv['peak_rss_mib']:.0f} MiB"
        + ("" if mv["exit_code"] in (0, 3) else f" (failed, exit {mv['exit_code']})"),
        f"≤ {mv['wall_limit_seconds']:.0f} s / ≤ {mv['peak_rss_limit_mib']:.0f} MiB",
    )


#: Targets (issue 19), as ratios measured in one benchmark run.
TARGETS = {
    "cold_over_brms": 0.5,
    "warm_over_cold": 0.03,
    "edited_over_cold": 0.25,
    "exact_speedup_over_bayesmeta": 100.0,
    "suite_over_brms": 1.5,
    "peak_memory_tree_mib": 1024.0,
}


def ratios(result: dict) -> dict:
    """The target ratios of a benchmark result (None where a side was not measured)."""
    cold, brms = result["cold"]["wall_seconds"], result.get("brms") or {}
    brms_s = brms.get("wall_seconds") if brms.get("available") else None
    suite = (result.get("fast_suite") or {}).get("wall_seconds")
    bayesmeta = result.get("bayesmeta") or {}
    return {
        "cold_over_brms": None if brms_s is None else round(cold / brms_s, 3),
        "warm_over_cold": round(result["warm"]["wall_seconds"] / cold, 4),
        "edited_over_cold": {
            name: round(run["wall_seconds"] / cold, 3) for name, run in result.get("edited", {}).items()
        },
        "exact_speedup_over_bayesmeta": bayesmeta.get("min_speedup") if bayesmeta.get("available") else None,
        "suite_over_brms": None if brms_s is None or suite is None else round(suite / brms_s, 3),
        "peak_memory_tree_mib": result["cold"]["peak_rss_tree_mib"],
    }


def _met(value: float | None, target: float, larger_is_better: bool = False) -> str:
    if value is None:
        return "not measured"
    return "met" if (value >= target if larger_is_better else value <= target) else "**not met**"


def _target_rows(result: dict) -> list[tuple[str, str, str]]:
    """Rows of the issue-19 targets: measured ratio, target, met or not."""
    r, cold, brms = ratios(result), result["cold"], result.get("brms") or {}
    brms_text = f"{brms['wall_seconds']:.1f} s" if brms.get("available") else f"not measured ({brms.get('reason')})"
    rows = [
        ("R brms, one outcome, fresh `Rscript` (compile + 4 × 2000 iterations)", brms_text, ""),
        ("`evmeta run`, cold (empty result cache)", f"{cold['wall_seconds']:.1f} s", ""),
        (
            "cold `evmeta run` / brms one fit",
            "not measured" if r["cold_over_brms"] is None else f"{r['cold_over_brms']:.2f}",
            f"≤ {TARGETS['cold_over_brms']} ({_met(r['cold_over_brms'], TARGETS['cold_over_brms'])})",
        ),
        (
            "unchanged rerun / cold",
            f"{result['warm']['wall_seconds']:.1f} s = {r['warm_over_cold']:.3f}",
            f"≤ {TARGETS['warm_over_cold']} ({_met(r['warm_over_cold'], TARGETS['warm_over_cold'])})",
        ),
    ]
    for name, ratio in r["edited_over_cold"].items():
        run = result["edited"][name]
        rows.append(
            (
                f"rerun after editing one {name} / cold",
                f"{run['wall_seconds']:.1f} s = {ratio:.3f}",
                f"≤ {TARGETS['edited_over_cold']} ({_met(ratio, TARGETS['edited_over_cold'])})",
            )
        )
    bm = result.get("bayesmeta") or {}
    if bm.get("available"):
        worst = min(bm["outcomes"].values(), key=lambda row: row["speedup"])
        speed = f"{worst['bayesmeta_ms']:.0f} ms / {worst['evmeta_exact_ms']:.1f} ms = {bm['min_speedup']:.0f}×"
    else:
        speed = f"not measured ({bm.get('reason')})"
    rows.append(
        (
            "R bayesmeta() / evmeta exact engine, per outcome (slowest ratio over outcomes)",
            speed,
            f"≥ {TARGETS['exact_speedup_over_bayesmeta']:.0f}× "
            f"({_met(r['exact_speedup_over_bayesmeta'], TARGETS['exact_speedup_over_bayesmeta'], True)})",
        )
    )
    suite = result.get("fast_suite") or {}
    if suite:
        rows.append(
            (
                f"fast test suite (README's command; {suite['summary']}) / brms one fit",
                f"{suite['wall_seconds']:.0f} s"
                + ("" if r["suite_over_brms"] is None else f" = {r['suite_over_brms']:.2f}"),
                f"≤ {TARGETS['suite_over_brms']} ({_met(r['suite_over_brms'], TARGETS['suite_over_brms'])})",
            )
        )
    rows.append(
        (
            "peak memory of a cold run, summed over its processes (largest single process)",
            f"{cold['peak_rss_tree_mib']:.0f} MiB ({cold['peak_rss_mib']:.0f} MiB)",
            f"≤ {TARGETS['peak_memory_tree_mib']:.0f} MiB "
            f"({_met(r['peak_memory_tree_mib'], TARGETS['peak_memory_tree_mib'])})",
        )
    )
    return rows


def markdown(result: dict) -> str:
    """The README table of a benchmark result."""
    m, fit = result["machine"], result["univariate_fit"]
    rows = _target_rows(result)
    rows += [
        (
            "one NUTS fit, 4 chains × 1000 draws, model already compiled (nutpie)",
            f"{fit['sampling_seconds']:.2f} s",
            "",
        ),
        ("compiling a model structure (nutpie; once per worker process)", f"{fit['compile_seconds']:.2f} s", ""),
        (
            "the same fit with PyMC's own sampler: sampling / with compile",
            f"{fit['pymc_sampler_sampling_seconds']:.2f} s / {fit['pymc_sampler_total_seconds']:.2f} s",
            "",
        ),
    ]
    rows += [_multivariate_row(result[key]) for key in MULTIVARIATE_KEYS if key in result]
    ba = result.get("bias_averaged_vs_robma") or {}
    if ba.get("available") and ba.get("max_ratio") is not None:
        worst = max((r for r in ba["outcomes"].values() if r["ratio"] is not None), key=lambda r: r["ratio"])
        rows.append(
            (
                "one bias-averaged fit of a flagship outcome / RoBMA default ensemble, same data (worst outcome)",
                f"{worst['evmeta_seconds']:.2f} s / {worst['robma_seconds']:.0f} s = {ba['max_ratio']:.4f}",
                f"≤ {ba['ratio_limit']:.2f}",
            )
        )
    rows += [(f"where the time goes: {k}", f"{v:.1f} s", "") for k, v in result.get("stages", {}).items()]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mib']} MiB, Python {m['python']} "
        f"(1-min load {m['load_average_1min']:.1f} at start)",
        "",
        "| measurement | result | target |",
        "|---|---|---|",
    ]
    return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in rows])


def stages_from_manifest(out: Path) -> dict:
    """Where the cold run's time went, from its manifest: seconds per stage (CPU-seconds summed over jobs)."""
    manifest = json.loads((out / "manifest.json").read_text())
    fits = manifest["fits"].values()

    def total(key: str) -> float:
        return sum(f["timings_seconds"].get(key, 0.0) for f in fits)

    stages = {
        f"outcome fits + checks, summed over the {len(manifest['fits'])} outcome jobs": total("analysis"),
        "outcome fits: of which compiling models (nutpie/numba)": total("compile"),
        "outcome figures, summed over outcomes": total("figures"),
    }
    mv = (manifest.get("multivariate") or {}).get("timings_seconds", {})
    if mv:
        stages["multivariate job (structures, LOO, rho_w sensitivity)"] = mv.get("analysis", 0.0)
        stages["multivariate job: of which compiling models (nutpie/numba)"] = mv.get("compile", 0.0)
        stages["multivariate figures"] = mv.get("figures", 0.0)
    stages["analysis wall time (2 worker processes)"] = manifest["timings_seconds"].get("analysis", 0.0)
    return stages


def cold_warm_edited(tmp: Path) -> dict:
    """Cold run, unchanged rerun and reruns after editing one outcome, on a copy of the default dataset.

    The edits are cumulative and each rerun starts from the previous run's cache: one outcome outside
    the multivariate model (its job alone reruns) and one inside it (its job and the multivariate job).
    """
    from analysis.dataset.effects import compute_effects
    from analysis.dataset.load import load_dataset
    from analysis.fitting.multivariate_data import default_outcomes

    dataset, cache_dir, out = tmp / "dataset", tmp / "cache", tmp / "report"
    shutil.copytree(DEFAULT_DATASET, dataset)
    result = {"cold": timed_run(dataset, out, cache_dir)}
    result["stages"] = {k: round(v, 2) for k, v in stages_from_manifest(out).items()}
    result["stages"]["process start, planning and report writing (wall)"] = round(
        result["cold"]["wall_seconds"] - result["stages"]["analysis wall time (2 worker processes)"], 2
    )
    result["warm"] = timed_run(dataset, out, cache_dir)
    loaded = load_dataset(dataset)
    inside = default_outcomes(loaded, compute_effects(loaded))
    outside = [o for o in loaded.outcomes if o not in inside]
    result["edited"] = {}
    for name, outcome in (("outcome outside the multivariate model", outside), ("multivariate outcome", inside)):
        if outcome:
            edit_one_outcome(dataset, outcome[-1])
            result["edited"][f"{name} ({outcome[-1]})"] = timed_run(dataset, out, cache_dir)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, write ``reports/benchmark.json`` and print the Markdown table."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m analysis.studies.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["bias-averaged"], help="run one part and update its key in the JSON")
    parser.add_argument("--no-suite", action="store_true", help="do not time the fast test suite")
    args = parser.parse_args(argv)
    from analysis.report.files import write_json

    if args.only == "bias-averaged":
        path = REPORTS_DIR / "benchmark.json"
        result = json.loads(path.read_text()) if path.exists() else {}
        result["bias_averaged_vs_robma"] = bias_averaged_vs_robma()
        write_json(path, result)
        print(json.dumps(result["bias_averaged_vs_robma"], indent=1))
        return 0
    result = {"machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        result |= cold_warm_edited(Path(tmp))
        effects_csv = write_effects_csv(Path(tmp) / "effects.csv")
        result["brms"] = brms_one_fit(effects_csv)
        result["bayesmeta"] = bayesmeta_vs_exact(effects_csv)
    if not args.no_suite:
        result["fast_suite"] = fast_suite()
    result["univariate_fit"] = compile_vs_sampling()
    result["multivariate_all"] = multivariate_all_outcomes()
    result["multivariate_all_cold_compile"] = multivariate_all_outcomes(cold_compile_cache=True)
    result["bias_averaged_vs_robma"] = bias_averaged_vs_robma()
    result["ratios"] = ratios(result)
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    write_json(REPORTS_DIR / "benchmark.json", result)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
