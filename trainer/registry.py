"""The model registry: every training result is a version; promote, roll back, retire.

Versions live in the experience library (``lib.add_model_version`` …, the SQLite truth); adapters live
at ``<workspace>/models/<id>/adapter``. Ids are ``v0003-grpo-reflection``: a sequence number over all
versions, then the method.

Design decisions
- Crash safety: the adapter is written into a temporary directory under ``<workspace>/models/`` and
  renamed into place (atomic on one filesystem) BEFORE the version is registered. A crash while saving
  leaves an orphan ``.tmp-*`` directory and no version; a failure while registering removes the
  renamed directory again. A registered version therefore always has a complete adapter.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memory.protocol import ModelVersions
from memory.records import ModelVersion

from .gate import GateDecision

_ID = re.compile(r"^v(\d{4,})-")
ROLLED_BACK = "rolled back"


def models_dir(workspace: str | Path) -> Path:
    return Path(workspace) / "models"


def next_version_id(lib: ModelVersions, method: str) -> str:
    """``v{n:04d}-{method}`` with n one past the highest number in use (the base is 0)."""
    numbers = [int(m.group(1)) for v in lib.list_model_versions() if (m := _ID.match(v.id))]
    return f"v{max(numbers, default=0) + 1:04d}-{method}"


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
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version_id}-", dir=root))
    try:
        save(tmp / "adapter")
        if not any((tmp / "adapter").iterdir()):
            raise RuntimeError(f"saving the adapter of {version_id} wrote no files")
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    mv = ModelVersion(id=version_id, parent=parent, base_model=base_model, method=method,
                      adapter_path=str(final / "adapter"), status="candidate", episode_ids=list(episode_ids or []),
                      metrics=dict(metrics or {}), note=note)
    try:
        lib.add_model_version(mv)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
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
        lib.set_model_status(restored.id, "promoted", note=f"restored by rollback of {current.id}")
    lib.set_model_status(current.id, "retired", note=f"{ROLLED_BACK} (was serving)")
    return lib.serving_version()


def apply_gate(lib: ModelVersions, version_id: str, decision: GateDecision) -> ModelVersion:
    """Promote the candidate if ``decision.promote``, else mark it ``rejected``; the reason becomes its note."""
    note = f"gate: {decision.summary()}"
    if decision.promote:
        return promote(lib, version_id, note=note)
    lib.set_model_status(version_id, "rejected", note=note)
    return _get(lib, version_id)
