"""The model registry: every training result is a version; promote, roll back, retire.

Versions live in the experience library (``lib.add_model_version`` …, the SQLite truth); adapters live
at ``<workspace>/models/<id>/adapter``. Ids are ``v0003-grpo-reflection``: a sequence number over all
versions, then the method.

Design decisions
- Crash safety: the adapter and a manifest (``version.json``: the row to be registered) are written into
  a temporary directory under ``<workspace>/models/`` and renamed into place (atomic on one filesystem)
  BEFORE the version is registered, so a registered version always has a complete adapter. A failure
  while registering removes the renamed directory again; a kill cannot, so :func:`recover` (run by the
  daemon at start, under its workspace lock) repairs what a kill leaves: stale ``.tmp-*`` directories
  are removed, a version directory without a row is adopted from its manifest (or, without a usable
  one, moved aside to ``.orphan-<id>-<time>``), and a half-done promote or rollback is completed.
- Ids are never reused: :func:`next_version_id` counts the numbers of rows AND of directories under
  ``models/`` (orphans and moved-aside ones included), so a leftover directory can never make
  registration raise ``FileExistsError`` on every restart.
- At most one version is ``promoted`` (the one served; none → the base). Promoting V marks the previous
  promoted version ``retired`` with note "superseded by V". Rollback retires the served version (note
  "rolled back") and re-promotes its nearest ancestor that was not itself rolled back or rejected (or
  falls back to the base). The new version is promoted before the old one is retired, so a crash in
  between serves the newer one rather than nothing.
- The gate's decision is applied with :func:`apply_gate`: promote, or mark ``rejected`` (kept on disk,
  not served); the decision's reason is stored as the version's note, which ``models list`` shows.

    selfevolve models list | promote V | rollback | show V
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memory.protocol import ModelVersions
from memory.records import ModelVersion

from .crashpoints import crashpoint
from .gate import GateDecision

_ID = re.compile(r"^v(\d{4,})-")
_ID_IN_NAME = re.compile(r"(?:^|[.-])v(\d{4,})-")  # v0003-sft, .tmp-v0003-sft-x1y2, .orphan-v0003-sft-17…
ROLLED_BACK = "rolled back"
MANIFEST = "version.json"
RESTORED = "restored by rollback of "


def models_dir(workspace: str | Path) -> Path:
    return Path(workspace) / "models"


def next_version_id(lib: ModelVersions, method: str, workspace: str | Path | None = None) -> str:
    """``v{n:04d}-{method}`` with n one past the highest number in use (the base is 0): in the registry or
    on disk under ``models/`` (``workspace`` defaults to ``lib.workspace``), so an orphan's id is never reused."""
    numbers = [int(m.group(1)) for v in lib.list_model_versions() if (m := _ID.match(v.id))]
    workspace = workspace if workspace is not None else getattr(lib, "workspace", None)
    if workspace is not None and models_dir(workspace).is_dir():
        numbers += [int(m.group(1)) for p in models_dir(workspace).iterdir() if (m := _ID_IN_NAME.search(p.name))]
    return f"v{max(numbers, default=0) + 1:04d}-{method}"


def manifest_of(mv: ModelVersion) -> str:
    """The manifest saved beside an adapter: the row to register, so a kill before the row can be adopted."""
    return mv.model_dump_json(indent=2)


def register_candidate(
    lib: ModelVersions,
    workspace: str | Path,
    version_id: str,
    save: Callable[[Path], None],
    parent: str | None,
    method: str,
    base_model: str = "default",
    episode_ids: list[str] | None = None,
    metrics: dict[str, Any] | None = None,
    note: str = "",
) -> ModelVersion:
    """Save the adapter with ``save(dir)`` (tmp dir, then rename) and register a ``candidate`` version."""
    root = models_dir(workspace)
    root.mkdir(parents=True, exist_ok=True)
    final = root / version_id
    if final.exists():
        raise FileExistsError(f"{final} already exists: version ids are never reused; remove it or pick another id")
    mv = ModelVersion(id=version_id, parent=parent, base_model=base_model, method=method,
                      adapter_path=str(final / "adapter"), status="candidate", episode_ids=list(episode_ids or []),
                      metrics=dict(metrics or {}), note=note)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version_id}-", dir=root))
    try:
        save(tmp / "adapter")
        if not any((tmp / "adapter").iterdir()):
            raise RuntimeError(f"saving the adapter of {version_id} wrote no files")
        (tmp / MANIFEST).write_text(manifest_of(mv), encoding="utf-8")
        crashpoint("register.saved")
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    crashpoint("register.renamed")
    try:
        lib.add_model_version(mv)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    crashpoint("register.added")
    return mv


def _get(lib: ModelVersions, version_id: str) -> ModelVersion:
    try:
        return lib.get_model_version(version_id)
    except KeyError:
        known = ", ".join(v.id for v in lib.list_model_versions()) or "none"
        raise KeyError(f"unknown model version {version_id!r}; known: {known} (see `selfevolve models list`)") from None


def promote(lib: ModelVersions, version_id: str, note: str = "promoted") -> ModelVersion:
    """Serve ``version_id``; the previously promoted version becomes ``retired`` (superseded)."""
    target = _get(lib, version_id)
    if target.status == "base" or (target.adapter_path is None and target.parent is None):
        raise ValueError(f"{version_id} is the base model; to serve the base, roll back the promoted versions")
    previous = [v for v in lib.list_model_versions() if v.status == "promoted" and v.id != version_id]
    lib.set_model_status(version_id, "promoted", note=note)
    for v in previous:
        crashpoint("promote.between")
        lib.set_model_status(v.id, "retired", note=f"superseded by {version_id}")
    return _get(lib, version_id)


def retire(lib: ModelVersions, version_id: str, note: str = "retired") -> ModelVersion:
    _get(lib, version_id)
    lib.set_model_status(version_id, "retired", note=note)
    return _get(lib, version_id)


def rollback(lib: ModelVersions) -> ModelVersion:
    """Retire the served version and serve its nearest usable ancestor (or the base). Returns what is served now."""
    current = lib.serving_version()
    if current.status != "promoted":
        raise ValueError(f"nothing to roll back: the base model ({current.id}) is being served")
    parent_id = current.parent
    restored: ModelVersion | None = None
    while parent_id is not None:
        p = _get(lib, parent_id)
        if p.status == "base":
            break
        if p.status != "rejected" and not p.note.startswith(ROLLED_BACK):
            restored = p
            break
        parent_id = p.parent
    if restored is not None:
        lib.set_model_status(restored.id, "promoted", note=f"{RESTORED}{current.id}")
    lib.set_model_status(current.id, "retired", note=f"{ROLLED_BACK} (was serving)")
    return lib.serving_version()


def apply_gate(lib: ModelVersions, version_id: str, decision: GateDecision) -> ModelVersion:
    """Promote the candidate if ``decision.promote``, else mark it ``rejected``; the reason becomes its note."""
    note = f"gate: {decision.summary()}"
    if decision.promote:
        return promote(lib, version_id, note=note)
    lib.set_model_status(version_id, "rejected", note=note)
    return _get(lib, version_id)


# ----- recovery after a kill ----------------------------------------------------------------------------
@dataclass
class Recovery:
    """What :func:`recover` repaired (names of directories and version ids)."""

    removed_tmp: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    moved_aside: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not any(vars(self).values())


def adopt_orphan(lib: ModelVersions, workspace: str | Path, version_id: str) -> ModelVersion | None:
    """Register ``models/<version_id>/`` from its manifest if it has no row; move it aside if it cannot be.

    Returns the adopted version, or None (no orphan, or moved aside: the id then stays unused)."""
    final = models_dir(workspace) / version_id
    if not final.is_dir() or version_id in {v.id for v in lib.list_model_versions()}:
        return None
    try:
        mv = ModelVersion.model_validate_json((final / MANIFEST).read_text(encoding="utf-8"))
        if mv.id != version_id or not any((final / "adapter").iterdir()):
            raise ValueError(f"manifest names {mv.id} or the adapter is empty")
    except (OSError, ValueError) as e:  # pydantic's ValidationError is a ValueError
        aside = final.with_name(f".orphan-{version_id}-{int(time.time())}")
        os.replace(final, aside)  # keeps its number in use (next_version_id reads it), out of the way
        (aside / "why.txt").write_text(f"moved aside by registry.recover: no usable manifest ({type(e).__name__}: {e})\n")
        return None
    mv = mv.model_copy(update={"adapter_path": str(final / "adapter"), "status": "candidate",
                               "note": (mv.note + "; " if mv.note else "") + "adopted after a crash"})
    return lib.add_model_version(mv)


def recover(lib: ModelVersions, workspace: str | Path) -> Recovery:
    """Repair what a kill between registry steps leaves (see the module docstring). Idempotent.

    Call it only while no other process registers into this workspace (the daemon holds its lock):
    it deletes ``.tmp-*`` directories, which a concurrent save would still be writing."""
    rec = Recovery()
    root = models_dir(workspace)
    if root.is_dir():
        for path in sorted(root.iterdir()):
            if path.name.startswith(".tmp-") and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                rec.removed_tmp.append(path.name)
            elif _ID.match(path.name) and path.is_dir():
                if path.name not in {v.id for v in lib.list_model_versions()}:
                    (rec.adopted if adopt_orphan(lib, workspace, path.name) else rec.moved_aside).append(path.name)
    _finish_half_done_promotion(lib, rec)
    return rec


def _finish_half_done_promotion(lib: ModelVersions, rec: Recovery) -> None:
    """More than one ``promoted`` row: a promote or a rollback was killed between its two writes. Both
    write the version to serve first, so the most recently promoted one (the served one) wins and the
    others are retired with the note the interrupted call would have written."""
    newest = lib.serving_version()
    for v in lib.list_model_versions():
        if v.status != "promoted" or v.id == newest.id:
            continue
        if newest.note == f"{RESTORED}{v.id}":  # rollback of v re-promoted its ancestor, then died
            lib.set_model_status(v.id, "retired", note=f"{ROLLED_BACK} (was serving)")
            rec.rolled_back.append(v.id)
        else:  # promote of `newest` died before retiring v
            lib.set_model_status(v.id, "retired", note=f"superseded by {newest.id}")
            rec.superseded.append(v.id)
