"""Is the embedded index directory safe to open in this process? Seals, the child probe, orphans.

Design decision (measured, see docs/reliability.md): a corrupt Chroma directory can kill the process
that opens it (a segfault in the HNSW loader, an abort from a Rust panic), so it is checked BEFORE it is
opened in-process, two ways:

- **The seal** — at a clean close the owner writes ``<workspace>/chroma.seal.json``: every file of the
  directory with its size and SHA-256. At the next open, a seal that matches means nothing touched the
  files since (≈1.6 GB/s of hashing here: 0.1 s for a 150 MB index); a seal that does not match means
  something did, and the directory is rebuilt from SQLite without being opened at all. The seal is
  removed before the directory is opened, so a crash or kill -9 leaves none.
- **The probe** — no seal (the last owner did not close cleanly, or an older selfevolve wrote the index):
  ``memory/probe.py`` opens the directory in a child process and exercises every collection
  (≈1.5–2.5 s, mostly importing chromadb). If the child dies, fails or times out, the directory is
  rebuilt; if it passes, the parent opens it.

Checksums alone would have to rebuild after every unclean exit; a probe alone would cost 2 s at every
open: together, a clean handover costs a hash and only a crash pays for a probe.

Orphans: Chroma's embedded client leaves a dropped collection's HNSW folder on disk (every rebuild
would leak one). Any UUID-named folder that ``chroma.sqlite3``'s ``segments`` table does not name is
removed by the owner, at open and at close.

    python -c "from memory.health import inspect; print(inspect('.selfevolve/chroma', '.selfevolve/chroma.seal.json'))"
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROBE = Path(__file__).with_name("probe.py")
SEGMENT_DIR = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class Verdict:
    """``fresh`` (nothing to check), ``sealed`` (unchanged since a clean close), ``unsealed`` (probe it)
    or ``changed`` (rebuild); ``detail`` says why, for the one warning line."""

    state: str
    detail: str = ""


def fingerprint(root: Path) -> dict[str, list]:
    """``{relative path: [size, sha256]}`` of every file under ``root``."""
    out: dict[str, list] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        out[path.relative_to(root).as_posix()] = [path.stat().st_size, digest]
    return out


def _difference(sealed: dict[str, list], now: dict[str, list]) -> str:
    for name in sorted(set(sealed) | set(now)):
        if name not in now:
            return f"{name} was deleted"
        if name not in sealed:
            return f"{name} appeared"
        if sealed[name][0] != now[name][0]:
            return f"{name} changed size ({sealed[name][0]} -> {now[name][0]} bytes)"
        if sealed[name][1] != now[name][1]:
            return f"{name} changed content"
    return ""


def inspect(root: str | Path, seal_path: str | Path) -> Verdict:
    """Compare the directory with its seal (no native code runs here)."""
    root, seal_path = Path(root), Path(seal_path)
    has_files = root.is_dir() and any(root.iterdir())
    try:
        sealed = json.loads(seal_path.read_text())["files"]
    except FileNotFoundError:
        return Verdict("unsealed", "not closed cleanly last time") if has_files else Verdict("fresh")
    except (OSError, ValueError, KeyError, TypeError):
        return Verdict("unsealed", "its seal is unreadable") if has_files else Verdict("fresh")
    if not root.is_dir():
        return Verdict("changed", "the directory was deleted")
    diff = _difference(sealed, fingerprint(root))
    return Verdict("changed", diff) if diff else Verdict("sealed")


def seal(root: str | Path, seal_path: str | Path) -> None:
    """Record the directory as it is now (call after the client is closed)."""
    root, seal_path = Path(root), Path(seal_path)
    tmp = seal_path.with_name(seal_path.name + ".tmp")
    tmp.write_text(json.dumps({"sealed_at": time.time(), "pid": os.getpid(), "files": fingerprint(root)}))
    os.replace(tmp, seal_path)


def unseal(seal_path: str | Path) -> None:
    Path(seal_path).unlink(missing_ok=True)


def probe(root: str | Path, prefix: str, timeout_s: float = 120.0) -> str | None:
    """Exercise the directory in a child process; ``None`` if healthy, else why not (one line)."""
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "RUST_BACKTRACE": "0"}
    try:
        proc = subprocess.run([sys.executable, str(PROBE), str(root), prefix], capture_output=True, text=True,
                              timeout=timeout_s, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"the probe did not finish in {timeout_s:.0f} s"
    if proc.returncode < 0:
        return f"opening it killed the probe process ({signal.Signals(-proc.returncode).name})"
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return f"the probe failed: {lines[-1][:200] if lines else f'exit {proc.returncode}'}"
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])["collections"]
    except (IndexError, ValueError, KeyError, TypeError):
        return "the probe printed no report"
    for name, r in report.items():
        if r["self_hits"] * 2 < r["sampled"]:
            return f"collection {name} finds only {r['self_hits']} of {r['sampled']} stored vectors"
    return None


def segment_ids(root: Path) -> set[str] | None:
    """Segment ids named in ``chroma.sqlite3`` (None if it cannot be read: then nothing is an orphan)."""
    db = root / "chroma.sqlite3"
    if not db.is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return {str(r[0]) for r in conn.execute("SELECT id FROM segments").fetchall()}
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def orphans(root: str | Path) -> list[Path]:
    """HNSW folders that no segment of ``chroma.sqlite3`` refers to."""
    root = Path(root)
    known = segment_ids(root) if root.is_dir() else None
    if known is None:
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and SEGMENT_DIR.fullmatch(p.name) and p.name not in known)


def remove_orphans(root: str | Path) -> int:
    """Delete orphan HNSW folders; returns how many (logged at info level with their size)."""
    found = orphans(root)
    size = sum(f.stat().st_size for p in found for f in p.rglob("*") if f.is_file())
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    if found:
        log.info("removed %d orphan HNSW folder(s) (%.1f MB) from %s", len(found), size / 1e6, root)
    return len(found)


def discard(root: str | Path) -> Path:
    """Move a broken directory to ``<name>.broken`` (replacing an older one) and leave an empty one."""
    root = Path(root)
    aside = root.with_name(f"{root.name}.broken")
    shutil.rmtree(aside, ignore_errors=True)
    if root.exists():
        shutil.move(str(root), str(aside))
    root.mkdir(parents=True, exist_ok=True)
    return aside
