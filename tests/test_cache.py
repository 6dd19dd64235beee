"""The content-addressed cache: keys follow the content, entries round-trip, bad entries are misses."""

from __future__ import annotations

from analysis import cache
from analysis.pipeline import plan_run
from tests.helpers import ARMS, replace_line, write_dataset


def test_store_load_contains_and_corrupt_entry(tmp_path):
    assert cache.load("k", folder=tmp_path) is None and not cache.contains("k", folder=tmp_path)
    cache.store("k", {"a": 1}, folder=tmp_path)
    assert cache.contains("k", folder=tmp_path) and cache.load("k", folder=tmp_path) == {"a": 1}
    (tmp_path / "bad.pkl").write_bytes(b"not a pickle")
    assert cache.load("bad", folder=tmp_path) is None


def test_outcome_keys_change_only_with_their_own_rows(tmp_path):
    base = {j.outcome: j.key for j in plan_run(write_dataset(tmp_path / "a"))["jobs"]}
    same = {j.outcome: j.key for j in plan_run(write_dataset(tmp_path / "b"))["jobs"]}
    assert base == same and set(base) == {"BMD", "Tb_Sp"}
    changed = {j.outcome: j.key for j in plan_run(write_dataset(tmp_path / "c", arms=replace_line(ARMS, 3, "A2020,ovx,control,BMD,0.21,0.03,,8,")))["jobs"]}
    assert changed["BMD"] != base["BMD"] and changed["Tb_Sp"] == base["Tb_Sp"]
    reseeded = {j.outcome: j.key for j in plan_run(write_dataset(tmp_path / "d"), seed=2)["jobs"]}
    assert all(reseeded[o] != base[o] for o in base)
