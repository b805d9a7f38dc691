"""The SQLite store on its own: schema, atomic and idempotent writes, filters, paging, kill -9 safety.

    .venv/bin/pytest tests/test_memory_store.py -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from memory.store import SCHEMA_VERSION, SchemaError, Store
from tests.memory_factories import make_episode

ROOT = Path(__file__).resolve().parent.parent


def test_schema_is_versioned_and_wal(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert {"episodes", "attempts", "runs", "model_versions", "meta"} <= set(store.db.table_names())
    store.db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    store.close()
    with pytest.raises(SchemaError, match="upgrade selfevolve"):
        Store(tmp_path / "x.db")


def test_put_get_is_idempotent_and_keeps_attempt_rows(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    ep = make_episode(1, first_success=False, success=True)
    store.put_episode(ep)
    store.put_episode(ep)
    assert store.get_episode(ep.id) == ep
    assert store.count() == 1
    rows = list(store.db["attempts"].rows_where("episode_id = ?", [ep.id], order_by="idx"))
    assert [r["idx"] for r in rows] == [0, 1] and rows[0]["has_reflection"] == 1
    assert '"node":"reflect"' in rows[0]["attempt_json"]
    store.put_episode(ep.model_copy(update={"attempts": ep.attempts[:1]}))
    assert store.db["attempts"].count_where("episode_id = ?", [ep.id]) == 1
    with pytest.raises(KeyError, match="selfevolve memory"):
        store.get_episode("nope")


def test_batch_write_is_all_or_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    with pytest.raises(AttributeError):
        store.put_episodes([make_episode(1), "not an episode"])  # type: ignore[list-item]
    assert store.count() == 0 and store.db["attempts"].count == 0
    store.put_episodes([make_episode(1), make_episode(2)])
    assert store.count() == 2


def test_filters_and_keyset_paging(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    t0 = 1_700_000_000.0
    eps = [
        make_episode(i, env="a" if i % 2 else "b", first_success=i % 3 == 0, success=i % 3 != 1,
                     model_version="v1" if i < 10 else "v2", run_id=f"r{i % 2}", created_at=t0 + i // 4)
        for i in range(25)
    ]  # four episodes share each timestamp: paging must not skip or repeat ties
    store.put_episodes(list(reversed(eps)))
    paged = [e.id for page in store.iter_pages(page_size=3) for e in page]
    assert sorted(paged) == sorted(e.id for e in eps) and len(paged) == 25
    assert [store.get_episode(i).created_at for i in paged] == sorted(e.created_at for e in eps)
    assert store.count(env="a") == sum(e.env == "a" for e in eps)
    assert store.count(success=True, first_success=False) == sum(e.recovered for e in eps)
    assert store.count(model_version="v2", run_id="r1") == sum(e.model_version == "v2" and e.run_id == "r1" for e in eps)
    assert store.count(since=t0 + 5) == sum(e.created_at >= t0 + 5 for e in eps)
    assert len(list(store.iter_episodes(limit=7, page_size=2))) == 7
    agg = store.aggregate("model_version")
    assert agg["v1"]["episodes"] == 10 and agg["v2"]["episodes"] == 15
    assert store.envs() == ["a", "b"] and store.index_counts()["a"] == (12, 0)


WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from memory.store import Store
    from tests.memory_factories import make_episode
    store = Store({db!r})
    i = 0
    while True:
        store.put_episode(make_episode(i % 50, first_success=False, success=True))  # re-records too
        i += 1
        if i == 20:
            print("ready", flush=True)
    """
)


def test_kill_9_never_loses_or_tears_an_episode(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT), db=str(db))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = Store(db)
    n = store.count()
    assert 20 <= n <= 50
    torn = store.db.execute(
        "SELECT e.id FROM episodes e LEFT JOIN attempts a ON a.episode_id = e.id "
        "GROUP BY e.id HAVING count(a.id) != max(e.n_attempts)"
    ).fetchall()
    assert torn == []
    for ep in store.iter_episodes():
        assert ep.recovered and len(ep.attempts) == 2
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_schema_2_workspace_is_migrated_to_the_purpose_column(tmp_path: Path) -> None:
    """A schema-2 file (no ``purpose`` column; evaluations tagged in metadata) opens as schema 3 with it filled."""
    import sqlite3

    db = tmp_path / "old.db"
    store = Store(db)
    old_eval = make_episode(1).model_copy(update={"metadata": {"purpose": "eval"}})
    store.put_episodes([make_episode(0), old_eval])
    store.close()
    conn = sqlite3.connect(db)  # make it what schema 2 wrote: no column, no field in the stored JSON
    for (eid, head) in conn.execute("SELECT id, episode_json FROM episodes").fetchall():
        data = json.loads(head)
        data.pop("purpose")
        conn.execute("UPDATE episodes SET episode_json = ? WHERE id = ?", [json.dumps(data), eid])
    conn.execute("ALTER TABLE episodes DROP COLUMN purpose")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    store = Store(db)
    assert store.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert dict(store.db.execute("SELECT id, purpose FROM episodes").fetchall()) == {
        make_episode(0).id: "train", old_eval.id: "eval"}
    assert [e.purpose for e in store.iter_episodes()] == ["train", "eval"]
    assert store.count(purpose="eval") == 1
    store.put_episode(make_episode(2).model_copy(update={"purpose": "eval"}))
    assert store.count(purpose="eval") == 2
