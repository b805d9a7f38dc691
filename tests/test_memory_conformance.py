"""One conformance suite for the experience library, run against every Chroma backend.

Like LangGraph's checkpoint-conformance: the same tests, parametrized by a ``backend`` fixture over
(1) the embedded ``PersistentClient`` and (2) a real ``chroma run`` server started as a subprocess.

    .venv/bin/pytest tests/test_memory_conformance.py -q
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from memory.index import collection_name
from memory.records import Episode
from memory.store import Store
from tests.memory_factories import make_episode

ARITH = "arithmetic:digits=2"
LEGS = "reasoning_gym:leg_counting"


def _populate(lib) -> list[Episode]:
    eps = [make_episode(i, env=ARITH, first_success=i % 2 == 0, success=i % 4 != 1) for i in range(8)]
    eps += [make_episode(i, env=LEGS, topic="legs", first_success=i % 3 == 0) for i in range(6)]
    for ep in eps:
        lib.record(ep)
    return eps


def test_record_get_round_trip(open_library) -> None:
    lib = open_library()
    ep = make_episode(1, first_success=False, success=True, run_id="run-1")
    assert lib.record(ep) == ep.id
    got = lib.get(ep.id)
    assert got == ep
    assert got.recovered and got.attempts[0].reflect is not None
    with pytest.raises(KeyError, match="no episode"):
        lib.get("ep-unknown")


def test_re_record_is_idempotent(open_library) -> None:
    lib = open_library()
    ep = make_episode(3, first_success=False, success=False)
    lib.record(ep)
    lib.record(ep)
    fixed = ep.model_copy(update={"attempts": ep.attempts[:1], "seconds": 2.5})
    lib.record(fixed)
    assert lib.count() == 1
    assert lib.get(ep.id) == fixed
    assert lib.index.count(ep.env) == 1
    assert lib.stats()["index"]["status"] == "in sync"


def test_search_finds_and_filters(open_library) -> None:
    lib = open_library()
    eps = _populate(lib)
    target = eps[9]  # legs, i=1
    hits = lib.search(target.summary_text(), k=3)
    assert hits[0].episode_id == target.id and hits[0].score > 0.99
    assert hits == sorted(hits, key=lambda h: -h.score)

    only_arith = lib.search(target.task.question, env=ARITH, k=20)
    assert only_arith and {h.env for h in only_arith} == {ARITH}
    assert len(only_arith) == 8

    wins = lib.search("What is 12 + 24?", env=ARITH, success=True, k=20)
    assert {h.episode_id for h in wins} == {e.id for e in eps if e.env == ARITH and e.success}
    losses = lib.search("What is 12 + 24?", success=False, k=20)
    assert {h.episode_id for h in losses} == {e.id for e in eps if not e.success}
    assert lib.search("anything", model_version="v-none", k=3) == []
    assert lib.search("anything", env="never-seen", k=3) == []
    assert "Problem:" in hits[0].hint and hits[0].text == hits[0].hint


def test_stats_counts(open_library) -> None:
    lib = open_library()
    eps = _populate(lib)
    stats = lib.stats()
    assert stats["episodes"] == len(eps) == lib.count()
    arith = [e for e in eps if e.env == ARITH]
    s = stats["envs"][ARITH]
    assert s["episodes"] == 8
    assert s["first_try_accuracy"] == pytest.approx(sum(e.first_success for e in arith) / 8)
    assert s["final_accuracy"] == pytest.approx(sum(e.success for e in arith) / 8)
    assert s["recovered"] == sum(e.recovered for e in arith) > 0
    assert s["tokens"] == sum(e.tokens for e in arith)
    assert stats["model_versions"]["base"]["episodes"] == len(eps)
    assert stats["index"]["status"] == "in sync"
    assert lib.count(env=ARITH, success=True) == sum(e.success for e in arith)
    assert lib.count(first_success=False, env=LEGS) == sum(not e.first_success for e in eps if e.env == LEGS)


def test_export_round_trip(open_library, tmp_path: Path) -> None:
    import datasets

    lib = open_library()
    eps = _populate(lib)
    n = lib.export(tmp_path / "all.jsonl")
    lines = (tmp_path / "all.jsonl").read_text().splitlines()
    assert n == len(lines) == len(eps)
    assert [Episode.model_validate_json(line) for line in lines] == sorted(eps, key=lambda e: e.created_at)

    n = lib.export(tmp_path / "hf", format="hf", env=ARITH, first_success=False)
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    assert n == len(ds) == sum(1 for e in eps if e.env == ARITH and not e.first_success)
    row = ds[0]
    assert row["reflection"] and row["prompt"][0]["role"] == "system" and row["first_success"] is False
    assert Episode.model_validate_json(row["episode_json"]) == lib.get(row["episode_id"])
    with pytest.raises(ValueError, match="unknown export format"):
        lib.export(tmp_path / "x", format="csv")  # type: ignore[arg-type]


def test_lost_index_is_rebuilt_with_same_results(open_library, backend: str) -> None:
    lib = open_library()
    _populate(lib)
    query = "How many legs do 13 spiders and 26 dogs have?"
    before = [(h.episode_id, round(h.score, 4)) for h in lib.search(query, k=5)]
    if backend == "embedded":
        lib.close()
        shutil.rmtree(lib.workspace / "chroma")
        lib = open_library()
    else:  # same process, collection deleted under the library's feet
        lib.index.client.delete_collection(collection_name(LEGS, lib.index.prefix))
    index = lib.stats()["index"]  # verified against SQLite, and healed, before it reports
    assert index["behind"] == 0 and index["status"] == "in sync" and index["owner"] is True
    assert len(index["healed"]) == 1 and "rebuilding it from SQLite" in index["healed"][0]
    assert index["envs"][LEGS]["in_index"] == 6 and index["envs"][LEGS]["vectors_match"]
    after = [(h.episode_id, round(h.score, 4)) for h in lib.search(query, k=5)]
    assert after == before


def test_corrupt_embedded_index_is_moved_aside_and_rebuilt(open_library, backend: str) -> None:
    if backend != "embedded":
        pytest.skip("a corrupt directory only exists for the embedded index")
    lib = open_library()
    eps = _populate(lib)
    lib.close()
    db = lib.workspace / "chroma" / "chroma.sqlite3"
    db.write_bytes(b"this is not a sqlite database" * 100)
    lib = open_library()
    hits = lib.search(eps[2].task.question, env=ARITH, k=1)
    assert hits[0].episode_id == eps[2].id
    assert (lib.workspace / "chroma.broken" / "chroma.sqlite3").read_bytes().startswith(b"this is not")


def test_index_behind_is_repaired(open_library, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = open_library()
    _populate(lib)

    def broken(*args: object, **kwargs: object) -> None:
        raise ConnectionError("index down")

    monkeypatch.setattr(lib.index, "upsert", broken)
    late = [make_episode(100 + i, env=LEGS, topic="legs") for i in range(3)]
    for ep in late:
        lib.record(ep)  # saved in SQLite, not indexed
    assert lib.count() == 17 and "index down" in (lib.last_index_error or "")
    assert lib.stats()["index"]["status"] == "behind by 3"
    monkeypatch.undo()
    hits = lib.search(late[1].task.question, env=LEGS, k=1)
    assert hits[0].episode_id == late[1].id
    assert lib.stats()["index"]["status"] == "in sync"

    # a process that died between its SQLite commit and embedding: the next owner embeds and indexes it
    lib.close()
    crashed = make_episode(200, env=ARITH)
    store = Store(lib.workspace / "experience.db")
    store.put_episode(crashed)
    store.close()
    lib = open_library()
    assert lib.store.count(unindexed_only=True) == 0 and lib.stats()["index"]["behind"] == 0
    assert lib.search(crashed.task.question, env=ARITH, k=1)[0].episode_id == crashed.id
    assert lib.index.count(ARITH) == 9


def test_concurrent_recording_from_threads(open_library) -> None:
    lib = open_library()
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(8):
                env = ARITH if i % 2 else LEGS
                lib.record(make_episode(t * 100 + i, env=env, topic="legs" if env == LEGS else "addition"))
        except BaseException as e:  # collected and re-raised below, in the test thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert lib.count() == 32
    stats = lib.stats()
    assert stats["index"]["status"] == "in sync"
    assert stats["index"]["envs"][ARITH]["in_index"] == 16 == stats["index"]["envs"][LEGS]["in_index"]


def test_model_versions_and_runs(open_library) -> None:
    from memory.records import ModelVersion, Run

    lib = open_library()
    assert lib.serving_version().id == "base"
    lib.add_model_version(ModelVersion(id="v1", parent="base", method="grpo", adapter_path="/a/v1"))
    lib.add_model_version(ModelVersion(id="v2", parent="v1", method="sft"))
    assert [v.id for v in lib.list_model_versions()] == ["base", "v1", "v2"]
    lib.set_model_status("v1", "promoted")
    lib.set_model_status("v2", "promoted", note="beats v1")
    assert lib.serving_version().id == "v2"
    lib.set_model_status("v2", "retired", note="rollback")
    assert lib.serving_version().id == "v1" and lib.get_model_version("v2").note == "rollback"
    with pytest.raises(KeyError, match="no model version"):
        lib.get_model_version("v9")

    run = lib.start_run(Run(kind="daemon", env=ARITH))
    done = lib.finish_run(run.id, {"episodes": 3})
    assert lib.get_run(run.id) == done and done.finished_at is not None and done.summary == {"episodes": 3}
