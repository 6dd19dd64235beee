"""Interrupting and killing runs leaves no partial or corrupt output (GitHub issue 9).

Real signals to real processes. The fast tests use a tiny Python process that is inside
:func:`analysis.atomic.staged_directory` (a few files written) when it receives the signal:

* SIGINT (Ctrl-C) raises ``KeyboardInterrupt``: the staging folder is removed on the way out;
* SIGTERM (Python's default: no cleanup) and SIGKILL leave the hidden staging folder
  ``.NAME.tmp-<pid>-XXXX`` behind; the target is untouched, and the next ``staged_directory``
  for that target removes the leftover because its process is gone (leftovers of running
  processes are never touched). A previous folder moved aside (``.NAME.old-<pid>-XXXX``) by a
  swap that was killed half-way is moved back.

The slow tests (``-m slow``) run ``python -m analysis.cli run DATASET --out DIR`` itself. The
child is instrumented only to make the timing deterministic: it announces on stderr when it is
part-way (inside the report's staging folder, or sampling NUTS draws) and then works slowly, so
the signal arrives exactly there. They check the exit code (130 for SIGINT), that ``DIR`` is
still the previous complete report and that no staging folder survives the next run, which
completes with the same numbers as an uninterrupted run (``tables/pooled_summary.csv`` and
``fits/nuts.json`` byte for byte).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from analysis.atomic import clean_stale_siblings, staged_directory, write_text_atomic

REPO = Path(__file__).resolve().parents[1]
EXIT_INTERRUPTED = 130

# --- fast: a tiny process inside staged_directory ---------------------------------------------------

STAGING_CHILD = textwrap.dedent("""
    import signal, sys, time
    # a child of a background (nohup) shell inherits SIGINT ignored: restore Python's default handler
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from pathlib import Path
    from analysis.atomic import staged_directory, write_text_atomic
    with staged_directory(Path(sys.argv[1])) as stage:
        for i in range(5):
            write_text_atomic(stage / "tables" / f"part{i}.csv", "x\\n" * 1000)
        print("inside-staging", flush=True)
        time.sleep(60)
""")


def _start_staging_child(out: Path) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", STAGING_CHILD, str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    line = child.stdout.readline()
    assert line.strip() == "inside-staging", child.stderr.read()
    return child


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _previous_report(out: Path) -> dict[str, bytes]:
    write_text_atomic(out / "report.md", "# the previous complete report\n")
    write_text_atomic(out / "tables" / "pooled_summary.csv", "outcome,mu\nBMD,0.5\n")
    return _tree(out)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_sigint_inside_staging_removes_it_and_keeps_the_previous_folder(tmp_path):
    out = tmp_path / "report"
    before = _previous_report(out)
    child = _start_staging_child(out)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=30)
    assert child.returncode != 0 and "KeyboardInterrupt" in err
    assert _tree(out) == before and _hidden(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_inside_staging_leaves_a_leftover_that_the_next_run_removes(tmp_path, sig):
    out = tmp_path / "report"
    before = _previous_report(out)
    child = _start_staging_child(out)
    child.send_signal(sig)
    child.communicate(timeout=30)
    assert child.returncode == -sig
    assert _tree(out) == before  # the target is never touched before the staging folder is complete
    leftovers = _hidden(tmp_path)
    assert leftovers == [n for n in leftovers if n.startswith(f".report.tmp-{child.pid}-")] and len(leftovers) == 1
    with staged_directory(out) as stage:
        assert _hidden(tmp_path) == [stage.name]  # the dead process's folder is gone
        write_text_atomic(stage / "report.md", "# new\n")
    assert _hidden(tmp_path) == [] and _tree(out) == {"report.md": b"# new\n"}


def test_leftovers_of_running_processes_are_kept(tmp_path):
    out = tmp_path / "report"
    child = _start_staging_child(out)  # alive: its staging folder is in use
    try:
        assert clean_stale_siblings(out) == []
        assert len(_hidden(tmp_path)) == 1
        leftover = _hidden(tmp_path)
    finally:
        child.kill()
        child.communicate(timeout=30)
    assert [p.name for p in clean_stale_siblings(out)] == leftover  # once its process is gone
    assert _hidden(tmp_path) == []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_folder_moved_aside_by_a_killed_swap_is_moved_back(tmp_path):
    out = tmp_path / "report"
    old = tmp_path / f".report.old-{_dead_pid()}-0123abcd"
    write_text_atomic(old / "report.md", "# the previous complete report\n")
    assert [p.name for p in clean_stale_siblings(out)] == [old.name]
    assert _tree(out) == {"report.md": b"# the previous complete report\n"} and _hidden(tmp_path) == []
    old_again = tmp_path / f".report.old-{_dead_pid()}-4567cdef"  # ...and removed if the new folder made it
    write_text_atomic(old_again / "report.md", "# older\n")
    clean_stale_siblings(out)
    assert _hidden(tmp_path) == [] and (out / "report.md").read_text() == "# the previous complete report\n"


def test_killed_atomic_file_write_leaves_a_temp_file_that_the_next_write_removes(tmp_path):
    target = tmp_path / "fit.json"
    leftover = tmp_path / f".fit.json.{_dead_pid()}-abc_12.tmp"
    leftover.write_bytes(b"{half")
    other = tmp_path / f".other.json.{_dead_pid()}-abc_12.tmp"  # another target's: not ours to remove
    other.write_bytes(b"{")
    write_text_atomic(target, "{}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["fit.json", other.name])
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # not mkstemp's 0o600


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# --- slow: the real `evmeta run` -----------------------------------------------------------------------

ONE_OUTCOME_TOML = """name = "tiny"
title = "Tiny test dataset"
provenance = "simulated"
citation = "test fixture"

[outcomes.BMD]
label = "Bone mineral density"
unit = "g/cm2"
direction = 1

[moderators.species]
type = "categorical"
reference = "rat"
"""
STUDIES = "study,species\nA2020,rat\nB2021,mouse\nC2022,rat\nD2023,mouse\n"
ARMS = """study,arm,role,outcome,mean,sd,sem,n,control_arm
A2020,ovx,control,BMD,0.22,0.03,,8,
A2020,ev,treatment,BMD,0.26,0.03,,8,
B2021,ovx,control,BMD,0.20,,0.01,6,
B2021,ev,treatment,BMD,0.23,,0.012,6,
C2022,ovx,control,BMD,0.21,0.04,,10,
C2022,ev,treatment,BMD,0.24,0.04,,10,
D2023,ovx,control,BMD,0.19,0.03,,9,
D2023,ev,treatment,BMD,0.25,0.03,,9,
"""
RUN_ARGS = ["--draws", "500", "--tune", "500", "--chains", "2", "--seed", "5", "--workers", "1", "--no-cache"]
COMPARED = ("tables/pooled_summary.csv", "fits/nuts.json")

#: Child process: ``evmeta run`` with a pause (see the module docstring) chosen by EVMETA_TEST_PAUSE.
CLI_CHILD = textwrap.dedent("""
    import os, sys, time
    pause = os.environ.get("EVMETA_TEST_PAUSE", "")
    if pause == "report":  # after the first table is written into the staging folder
        import analysis.report.write as report
        original_write_csv = report.write_csv
        def write_csv(path, frame):
            written = original_write_csv(path, frame)
            if ".tmp-" in str(path):
                print("evmeta-test: inside the staging folder", file=sys.stderr, flush=True)
                time.sleep(120)
            return written
        report.write_csv = write_csv
    elif pause == "sampling":  # NUTS is drawing: announce it, and make the run long enough to interrupt
        import nutpie
        original_sample = nutpie.sample
        def sample(*args, **kwargs):
            state = {"first": True}
            def progress(chains):
                if state.pop("first", False):
                    print("evmeta-test: sampling", file=sys.stderr, flush=True)
            kwargs.update(draws=10**6, progress_callback=progress, progress_rate=50)
            return original_sample(*args, **kwargs)
        nutpie.sample = sample
    from analysis.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _dataset(root: Path) -> Path:
    path = root / "data"
    path.mkdir()
    (path / "dataset.toml").write_text(ONE_OUTCOME_TOML, encoding="utf-8")
    (path / "studies.csv").write_text(STUDIES, encoding="utf-8")
    (path / "arms.csv").write_text(ARMS, encoding="utf-8")
    return path


def _evmeta_run(dataset: Path, out: Path, *, pause: str = "") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CLI_CHILD, "run", str(dataset), "--out", str(out), *RUN_ARGS],
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=_env() | {"EVMETA_TEST_PAUSE": pause, "MPLBACKEND": "Agg"},
    )


def _wait_for(child: subprocess.Popen, marker: str, timeout: float = 600) -> list[str]:
    lines, started = [], time.monotonic()
    for line in child.stderr:
        lines.append(line)
        if marker in line:
            return lines
        assert time.monotonic() - started < timeout, "".join(lines)
    raise AssertionError(f"the run ended before {marker!r}:\n" + "".join(lines))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: the numbers every rerun must reproduce."""
    root = tmp_path_factory.mktemp("interrupt")
    dataset = _dataset(root)
    child = _evmeta_run(dataset, root / "reference")
    _, err = child.communicate(timeout=900)
    assert child.returncode in (0, 3), err
    return dataset, {name: (root / "reference" / name).read_bytes() for name in COMPARED}


def _assert_rerun_matches(dataset: Path, out: Path, expected: dict[str, bytes]) -> None:
    child = _evmeta_run(dataset, out)
    _, err = child.communicate(timeout=900)
    assert child.returncode in (0, 3), err
    assert {name: (out / name).read_bytes() for name in COMPARED} == expected
    assert _hidden(out.parent) == [], "a staging folder survived the next run"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_evmeta_run_signalled_while_writing_the_report(reference, tmp_path, sig):
    dataset, expected = reference
    out = tmp_path / "report"
    before = _previous_report(out)
    child = _evmeta_run(dataset, out, pause="report")
    _wait_for(child, "evmeta-test: inside the staging folder")
    assert len(_hidden(tmp_path)) == 1  # the staging folder, part-written
    child.send_signal(sig)
    _, err = child.communicate(timeout=120)
    if sig in (signal.SIGINT, signal.SIGTERM):  # the CLI handles both: exit 128 + signal, staging removed
        assert child.returncode == (EXIT_INTERRUPTED if sig == signal.SIGINT else 128 + sig) and "interrupted" in err
        assert _hidden(tmp_path) == []
    else:  # SIGKILL cannot be handled: the staging folder stays until the next run removes it
        assert child.returncode == -sig
        assert [name.startswith(f".report.tmp-{child.pid}-") for name in _hidden(tmp_path)] == [True]
    assert _tree(out) == before, "the previous complete report was changed"
    _assert_rerun_matches(dataset, out, expected)


@pytest.mark.slow
def test_evmeta_run_without_previous_report_leaves_no_folder(reference, tmp_path):
    dataset, expected = reference
    out = tmp_path / "report"
    child = _evmeta_run(dataset, out, pause="report")
    _wait_for(child, "evmeta-test: inside the staging folder")
    child.send_signal(signal.SIGINT)
    child.communicate(timeout=120)
    assert child.returncode == EXIT_INTERRUPTED
    assert list(tmp_path.iterdir()) == []
    _assert_rerun_matches(dataset, out, expected)


@pytest.mark.slow
def test_evmeta_run_sigint_while_sampling_stops_with_130(reference, tmp_path):
    dataset, _ = reference
    out = tmp_path / "report"
    child = _evmeta_run(dataset, out, pause="sampling")
    _wait_for(child, "evmeta-test: sampling")
    child.send_signal(signal.SIGINT)
    try:
        child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        pytest.fail("evmeta run was still running 30 s after Ctrl-C during NUTS sampling")
    assert child.returncode == EXIT_INTERRUPTED
    assert not out.exists() and _hidden(tmp_path) == []


def _children(pid: int) -> list[int]:
    """Ids of the live child processes of ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_killing_a_parallel_run_leaves_no_orphan_workers(tmp_path):
    from tests.helpers import write_dataset

    dataset = write_dataset(tmp_path)  # two outcomes with data: two jobs for two workers
    args = [
        "run",
        str(dataset),
        "--out",
        str(tmp_path / "report"),
        "--draws",
        "500",
        "--tune",
        "500",
        "--chains",
        "2",
        "--workers",
        "2",
        "--no-cache",
    ]
    child = subprocess.Popen(
        [sys.executable, "-m", "analysis.cli", *args],
        cwd=REPO,
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env=_env() | {"MPLBACKEND": "Agg"},
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while len(workers) < 2 and time.monotonic() < deadline and child.poll() is None:
            workers = [pid for pid in _children(child.pid) if "spawn_main" in _cmdline(pid)]
            time.sleep(0.2)
        assert len(workers) >= 2, "the worker processes never started"
        time.sleep(3)  # let them start their jobs
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not [pid for pid in workers if _alive(pid)], "worker processes outlived the killed run"
    finally:
        for pid in workers:  # processes this test started: do not leak them
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if child.poll() is None:
            child.kill()
