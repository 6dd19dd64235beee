"""The content-addressed cache: keys follow the content, entries round-trip, bad entries are misses."""

from __future__ import annotations

from analysis.run import cache
from analysis.run.pipeline import plan_run
from tests.helpers import ARMS, replace_line, write_dataset


def test_store_load_contains_and_corrupt_entry(tmp_path):
    assert cache.load("k", folder=tmp_path) is None and not cache.contains("k", folder=tmp_path)
    cache.store("k", {"a": 1}, folder=tmp_path)
    assert cache.contains("k", folder=tmp_path) and cache.load("k", folder=tmp_path) == {"a": 1}
    (tmp_path / "bad.pkl").write_bytes(b"not a pickle")
    assert cache.load("bad", folder=tmp_path) is None


def test_outcome_keys_change_only_with_their_own_rows(tmp_path):
    base = {j.outcome: j.key for j in plan_run(write_dataset(tmp_path / "a")).jobs}
    same = {j.outcome: j.key for j in plan_run(write_dataset(tmp_path / "b")).jobs}
    assert base == same and set(base) == {"BMD", "Tb_Sp"}
    changed = {
        j.outcome: j.key
        for j in plan_run(
            write_dataset(tmp_path / "c", arms=replace_line(ARMS, 3, "A2020,ovx,control,BMD,0.21,0.03,,8,"))
        ).jobs
    }
    assert changed["BMD"] != base["BMD"] and changed["Tb_Sp"] == base["Tb_Sp"]
    reseeded = {j.outcome: j.key for j in plan_run(write_dataset(tmp_path / "d"), seed=2).jobs}
    assert all(reseeded[o] != base[o] for o in base)


def test_editing_a_module_in_a_subfolder_invalidates_the_run(tmp_path, monkeypatch):
    """The source digest covers every .py file under analysis/ and models/ by relative path."""
    import shutil

    from analysis.config import PROJECT_ROOT

    for folder in cache.SOURCE_FOLDERS:
        shutil.copytree(PROJECT_ROOT / folder, tmp_path / "src" / folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "PROJECT_ROOT", tmp_path / "src")
    files = cache.source_files()
    assert (tmp_path / "src" / "analysis" / "fitting" / "nuts.py") in files
    assert (tmp_path / "src" / "models" / "exact" / "posterior.py") in files
    data = write_dataset(tmp_path / "data")
    before = plan_run(data)
    for job in before.jobs:
        cache.store(job.key, "artifacts", folder=tmp_path / "cache")
    assert plan_run(data).key == before.key
    nested = tmp_path / "src" / "analysis" / "fitting" / "nuts.py"
    nested.write_text(nested.read_text() + "\n# an edit\n")
    after = plan_run(data)
    assert after.key != before.key
    assert not any(cache.contains(job.key, folder=tmp_path / "cache") for job in after.jobs)  # every outcome recomputed
    # a file moved to another folder with the same name and content is a different source tree
    nested.rename(tmp_path / "src" / "analysis" / "nuts.py")
    assert plan_run(data).key not in (before.key, after.key)
