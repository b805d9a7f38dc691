"""Fault injection into the experience library's Chroma index: every index file × fault × entry point.

One worker process runs every cell in-process (the CLI through Typer's runner, the daemon's loop
through ``Daemon.run``), so the matrix costs one interpreter, not one per cell, and a native crash
that got through would kill the worker — the test then names the cell it was in. Per cell: copy a
sealed base workspace (``N_BASE`` episodes), damage one file of its index, run one entry point, and
record what the user saw (exit code, stderr lines, tracebacks, Rust panics), then check that SQLite
still holds every episode and that the index is whole again (verified against SQLite, a search finds
a known episode first).

``--unsealed`` removes the seal first, as after a kill -9: the index is then probed in a child
process instead of being compared with its checksums.

    python -m tests.memory_faults --markdown              # the table in docs/reliability.md (sealed)
    python -m tests.memory_faults --markdown --unsealed   # the same after an unclean exit
    python -m tests.memory_faults --against /work/main    # the same damage, one CLI process per cell,
                                                          # against another checkout's code ("before")
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

ENV = "arithmetic"
N_BASE = 120
HNSW_SMALL = {"sync_threshold": 32, "batch_size": 32}  # Chroma's default (1000) keeps 120 vectors in its log
FILES = ("chroma.sqlite3", "header.bin", "index_metadata.pickle", "link_lists.bin", "length.bin", "data_level0.bin")
FAULTS = ("random bytes", "truncated", "deleted")
OPS = ("run", "search", "stats", "daemon start")
POLICY = "python:tests.daemon_scripted:policy"
KNOWN = 7  # the base episode a search must find first


def cells() -> list[tuple[str, str, str]]:
    return [(f, fault, op) for f in FILES for fault in FAULTS for op in OPS]


def cell_id(cell: tuple[str, str, str]) -> str:
    return "-".join(part.replace(" ", "_").replace(".", "_") for part in cell)


# ----- the base workspace and the faults -----
def build_base(ws: Path) -> list[str]:
    from memory import index
    from memory.library import ExperienceLibrary
    from tests.memory_factories import make_episode

    index.HNSW.update(HNSW_SMALL)
    episodes = [make_episode(i, env=ENV, first_success=i % 3 != 0) for i in range(N_BASE)]
    with ExperienceLibrary(ws) as lib:
        for start in range(0, N_BASE, 16):
            lib.record_many(episodes[start : start + 16])
    (segment,) = [p for p in (ws / "chroma").iterdir() if p.is_dir()]
    missing = [f for f in FILES[1:] if not (segment / f).is_file() or not (segment / f).stat().st_size]
    if missing:
        raise RuntimeError(f"the base index lacks {missing}: raise N_BASE or lower HNSW_SMALL")
    return [ep.id for ep in episodes]


def target(ws: Path, name: str) -> Path:
    chroma = ws / "chroma"
    if name == "chroma.sqlite3":
        return chroma / name
    (segment,) = [p for p in chroma.iterdir() if p.is_dir()]
    return segment / name


def inject(path: Path, fault: str, seed: int) -> None:
    size = path.stat().st_size
    if fault == "deleted":
        path.unlink()
    elif fault == "truncated":
        with path.open("r+b") as f:
            f.truncate(size // 2)
    else:  # random bytes: 64 chunks of 16 bytes over the file (all of it if it is small)
        rng = random.Random(seed)
        with path.open("r+b") as f:
            if size <= 1024:
                f.write(rng.randbytes(size))
            for offset in sorted(rng.sample(range(size), 64)) if size > 1024 else []:
                f.seek(offset)
                f.write(rng.randbytes(16))


# ----- the entry points -----
@contextmanager
def captured_fd2(sink: io.StringIO):
    """Everything written to file descriptor 2 (Python's stderr and native code's) goes to ``sink``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            sink.write(tmp.read().decode("utf-8", "replace"))


def cli(*args: str) -> tuple[int, str]:
    """Run ``selfevolve ARGS`` in-process; stdout, and what went to Python's stderr, go to fd 1 and 2."""
    from typer.testing import CliRunner

    from agent.cli import app

    result = CliRunner().invoke(app, list(args))
    sys.stderr.write(result.stderr)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        sys.stderr.write("".join(traceback.format_exception(*result.exc_info)))
    return result.exit_code, result.stdout

def daemon_start(ws: Path) -> tuple[int, str]:
    from agent.daemon.config import parse_config
    from agent.daemon.loop import Daemon

    cfg = parse_config({
        "model": POLICY, "tensorboard": False, "episodes_per_cycle": 2, "concurrency": 2,
        "environments": [{"spec": ENV}],
        "training": {"trainer": "python:tests.daemon_scripted:fake_train", "min_new_failures": 1000},
        "gate": {"eval_size": 2}, "monitors": {"tasks": 1, "k": 2}, "budgets": {"cycles": 1},
    })
    reason = asyncio.run(Daemon(ws, cfg).run())
    return (0 if reason.startswith("budget") else 1), reason


def run_op(op: str, ws: Path, question: str) -> tuple[int, str, int]:
    """(exit code, output, episodes the op itself recorded)."""
    if op == "run":
        code, text = cli("run", "--env", ENV, "--episodes", "2", "--concurrency", "2", "--model", POLICY,
                         "-w", str(ws), "--json", "--seed", "3")
        return code, text, 2 if code == 0 else 0
    if op == "search":
        code, text = cli("memory", "search", question, "--env", ENV, "-k", "3", "-w", str(ws), "--json")
        return code, text, 0
    if op == "stats":
        code, text = cli("memory", "stats", "-w", str(ws), "--json")
        return code, text, 0
    code, text = daemon_start(ws)
    return code, text, 2 if code == 0 else 0


def op_result_ok(op: str, text: str, known_id: str) -> bool:
    data = json.loads(text[text.index("{"):]) if op != "daemon start" else {}
    if op == "search":
        return data["hits"][0]["episode_id"] == known_id
    if op == "stats":
        return data["index"]["status"] == "in sync" and data["index"]["owner"] is True
    if op == "run":
        return data["episodes"] == 2 and not data["errors"]
    return True


# ----- one cell -----
def after_check(ws: Path, base_ids: list[str], question: str, known_id: str) -> dict[str, Any]:
    """What SQLite and the index hold once the op is over."""
    from memory.library import ExperienceLibrary

    with ExperienceLibrary(ws) as lib:
        ids = {e.id for e in lib.episodes()}
        status = lib.index_status()
        hits = lib.search(question, env=ENV, k=1)
        return {
            "lost": len(set(base_ids) - ids), "episodes": len(ids),
            "in_sync": status["status"] == "in sync" and status["owner"] and status["verified"].startswith("now"),
            "in_index": status["envs"][ENV]["in_index"], "found": bool(hits) and hits[0].episode_id == known_id,
        }


def run_cell(base: Path, work: Path, cell: tuple[str, str, str], base_ids: list[str], sealed: bool) -> dict:
    name, fault, op = cell
    ws = work / cell_id(cell)
    shutil.copytree(base, ws)
    if not sealed:
        (ws / "chroma.seal.json").unlink()
    inject(target(ws, name), fault, seed=cells().index(cell))
    from tests.memory_factories import make_episode

    known = make_episode(KNOWN, env=ENV, first_success=KNOWN % 3 != 0)
    stderr = io.StringIO()
    t0 = time.perf_counter()
    with captured_fd2(stderr):
        try:
            code, text, recorded = run_op(op, ws, known.task.question)
        except BaseException as e:  # a crash of the op itself: recorded as the cell's failure
            if isinstance(e, KeyboardInterrupt):
                raise
            code, text, recorded = 99, f"raised {type(e).__name__}: {e}", 0
    seconds = time.perf_counter() - t0
    err = stderr.getvalue()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    ok = code == 0 and op_result_ok(op, text, known.id) if code == 0 else False
    after = after_check(ws, base_ids, known.task.question, known.id)
    shutil.rmtree(ws, ignore_errors=True)
    healed = any("rebuilding it from SQLite" in ln for ln in lines)
    one_line_fail = code != 0 and "selfevolve memory reindex" in text and "Traceback" not in text
    outcome = ("healed" if healed else "unaffected") if ok else ("failed: reindex named" if one_line_fail
                                                               else "FAILED")
    return {
        "cell": list(cell), "outcome": outcome, "exit": code,
        "warnings": sum("index" in ln and "Loading weights" not in ln for ln in lines),
        "stderr_lines": len(lines), "traceback": "Traceback" in err or "Traceback" in text,
        "panic": "panicked" in err, "recorded": recorded, "seconds": round(seconds, 2), "warning": lines[:3],
        **after, "expected_episodes": len(base_ids) + recorded,
    }


# ----- the same damage against another checkout (what users saw before) -----
OLD_BASE = """
import sys
from memory.library import ExperienceLibrary
from tests.memory_factories import make_episode
eps = [make_episode(i, env="arithmetic", first_success=i % 3 != 0) for i in range(1100)]
with ExperienceLibrary(sys.argv[1]) as lib:
    for s in range(0, 1100, 100):
        lib.record_many(eps[s : s + 100])
"""
DAEMON_TOML = f"""
model = "{POLICY}"
tensorboard = false
episodes_per_cycle = 2
concurrency = 2
[[environments]]
spec = "{ENV}"
[training]
trainer = "python:tests.daemon_scripted:fake_train"
min_new_failures = 1000
[gate]
eval_size = 2
[monitors]
tasks = 1
k = 2
[budgets]
cycles = 1
"""


def against(code: Path, work: Path, ops: list[str]) -> list[dict]:
    """Every cell as a separate ``python -m agent.cli`` run of ``code``: exit code, traceback, signal.

    The base has 1100 episodes: that code keeps Chroma's default ``sync_threshold`` (1000), below which
    the HNSW files hold no vectors."""
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", OLD_BASE, str(work / "base")], cwd=code, env=env, check=True,
                   capture_output=True)
    (work / "daemon.toml").write_text(DAEMON_TOML)
    args = {"run": ["run", "--env", ENV, "--episodes", "2", "--concurrency", "2", "--model", POLICY, "--json"],
            "search": ["memory", "search", "What is 17 + 34?", "--env", ENV, "-k", "3", "--json"],
            "stats": ["memory", "stats", "--json"], "daemon start": ["daemon", "--quiet", "-c", str(work / "daemon.toml")]}
    results = []
    for cell in [c for c in cells() if c[2] in ops]:
        print(f"cell {cell_id(cell)}", flush=True)
        ws = work / cell_id(cell)
        shutil.copytree(work / "base", ws)
        inject(target(ws, cell[0]), cell[1], seed=cells().index(cell))
        proc = subprocess.run([sys.executable, "-m", "agent.cli", *args[cell[2]], "-w", str(ws)], cwd=code, env=env,
                              capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        status = None
        if cell[2] == "stats" and proc.returncode == 0:
            status = json.loads(proc.stdout)["index"]["status"]
        results.append({"cell": list(cell), "exit": proc.returncode, "traceback": "Traceback" in proc.stderr,
                        "status": status, "last": (proc.stderr.strip().splitlines() or [""])[-1][:200]})
        shutil.rmtree(ws, ignore_errors=True)
    return results


def before_cell(r: dict) -> str:
    if r["exit"] < 0:
        return f"crash ({__import__('signal').Signals(-r['exit']).name})"
    if r["exit"] != 0:
        return "exit 1, traceback" if r["traceback"] else "exit 1"
    if r["status"] == "in sync":
        return "ok, stats say \"in sync\""
    return f"ok, stats: {r['status'][:40]}" if r["status"] else "ok"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--unsealed", action="store_true", help="remove the seal first (as after kill -9)")
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated subset of: " + ", ".join(OPS))
    parser.add_argument("--out", type=Path, help="write the results (JSON lines) here as they come")
    parser.add_argument("--markdown", action="store_true", help="print the matrix as a Markdown table")
    parser.add_argument("--against", type=Path, help="run each cell as a CLI process of this checkout instead")
    args = parser.parse_args(argv)
    ops = [op for op in args.ops.split(",") if op]
    if args.against:
        work = Path(tempfile.mkdtemp(prefix="memory-faults-against-"))
        try:
            results = against(args.against.resolve(), work, ops)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if args.out:
            args.out.write_text("".join(json.dumps(r) + "\n" for r in results))
        print(markdown(results, ops, before_cell))
        return 0
    import logging

    logging.getLogger("memory.health").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="memory-faults-"))
    results = []
    try:
        base_ids = build_base(work / "base")
        out = args.out.open("w") if args.out else None
        for cell in [c for c in cells() if c[2] in ops]:
            print(f"cell {cell_id(cell)}", flush=True)
            res = run_cell(work / "base", work, cell, base_ids, sealed=not args.unsealed)
            results.append(res)
            if out:
                out.write(json.dumps(res) + "\n")
                out.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.markdown:
        print(markdown(results, ops))
    return 0


def after_cell(r: dict) -> str:
    mark = r["outcome"] if r["lost"] == 0 and r["in_sync"] and r["found"] else "BROKEN " + r["outcome"]
    return f"{mark} ({r['seconds']:.1f} s)"


def markdown(results: list[dict], ops: list[str], show=after_cell) -> str:
    by = {tuple(r["cell"]): r for r in results}
    rows = ["| file | fault | " + " | ".join(ops) + " |", "|---|---|" + "---|" * len(ops)]
    for name in FILES:
        for fault in FAULTS:
            cells_ = []
            for op in ops:
                cells_.append(show(by[(name, fault, op)]))
            rows.append(f"| {name} | {fault} | " + " | ".join(cells_) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
