"""Registry: version ids, atomic save-then-register, promote / rollback / gate, on the real library."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer import registry
from trainer.gate import TaskOutcome, evaluate_gate


@pytest.fixture
def lib(library):
    return library


def _save_ok(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"weights")


def _register(lib, method="sft", parent="base"):
    vid = registry.next_version_id(lib, method)
    return registry.register_candidate(lib, lib.workspace, vid, _save_ok, parent=parent, method=method)


def test_ids_and_register(lib):
    assert registry.next_version_id(lib, "grpo-reflection") == "v0001-grpo-reflection"
    mv = _register(lib)
    assert mv.id == "v0001-sft" and mv.status == "candidate"
    assert Path(mv.adapter_path).is_dir() and Path(mv.adapter_path) == lib.workspace / "models" / mv.id / "adapter"
    assert lib.get_model_version(mv.id).adapter_path == mv.adapter_path
    assert registry.next_version_id(lib, "dpo") == "v0002-dpo"


def test_failure_while_saving_registers_nothing(lib):
    def save_crash(path: Path) -> None:
        path.mkdir(parents=True)
        (path / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        registry.register_candidate(lib, lib.workspace, "v0001-sft", save_crash, parent="base", method="sft")
    assert [v.id for v in lib.list_model_versions()] == ["base"]
    assert list((lib.workspace / "models").iterdir()) == []  # no final dir, temp dir cleaned


def test_failure_while_registering_removes_the_adapter(lib, monkeypatch):
    def fail(mv):
        raise RuntimeError("injected failure in add_model_version")

    monkeypatch.setattr(lib, "add_model_version", fail)
    with pytest.raises(RuntimeError, match="injected"):
        registry.register_candidate(lib, lib.workspace, "v0001-sft", _save_ok, parent="base", method="sft")
    assert not (lib.workspace / "models" / "v0001-sft").exists()
    assert [v.id for v in lib.list_model_versions()] == ["base"]


def test_promote_rollback_chain(lib):
    v1 = _register(lib)
    registry.promote(lib, v1.id)
    v2 = _register(lib, parent=v1.id)
    registry.promote(lib, v2.id)
    assert lib.serving_version().id == v2.id
    assert lib.get_model_version(v1.id).status == "retired"
    assert registry.rollback(lib).id == v1.id  # v2 retired, its parent served again
    assert lib.get_model_version(v2.id).status == "retired"
    assert registry.rollback(lib).id == "base"
    with pytest.raises(ValueError, match="nothing to roll back"):
        registry.rollback(lib)
    with pytest.raises(KeyError, match="models list"):
        registry.promote(lib, "v9999-nope")


def test_apply_gate(lib):
    v1, v2 = _register(lib), _register(lib)
    win = evaluate_gate({"t": TaskOutcome(False, True)}, {"t": TaskOutcome(False, False)}, v1.id, "base")
    lose = evaluate_gate({"t": TaskOutcome(False, False)}, {"t": TaskOutcome(False, False)}, v2.id, v1.id)
    assert registry.apply_gate(lib, v1.id, win).status == "promoted"
    rejected = registry.apply_gate(lib, v2.id, lose)
    assert rejected.status == "rejected" and rejected.note.startswith("gate: keep current")
    assert lib.serving_version().id == v1.id


# ----- crash consistency (issue 19.2): what a kill between the steps of register/promote leaves, and recover()
def _orphan(lib, version_id="v0001-sft", manifest=True):
    """What a kill between the adapter rename and the registry row leaves: a version dir with no row."""
    final = lib.workspace / "models" / version_id
    _save_ok(final / "adapter")
    if manifest:
        mv = registry.ModelVersion(id=version_id, parent="base", method="sft", adapter_path=str(final / "adapter"),
                                   metrics={"steps": 3})
        (final / registry.MANIFEST).write_text(registry.manifest_of(mv))
    return final


def test_orphan_with_manifest_is_adopted_and_ids_never_reused(lib):
    final = _orphan(lib)
    assert registry.next_version_id(lib, "sft") == "v0002-sft"  # the orphan's id is in use on disk
    rec = registry.recover(lib, lib.workspace)
    assert rec.adopted == ["v0001-sft"] and not rec.moved_aside
    mv = lib.get_model_version("v0001-sft")
    assert mv.status == "candidate" and mv.metrics == {"steps": 3} and mv.adapter_path == str(final / "adapter")
    assert registry.recover(lib, lib.workspace).empty()  # idempotent


def test_orphan_without_manifest_is_moved_aside_and_its_id_skipped(lib):
    final = _orphan(lib, manifest=False)
    rec = registry.recover(lib, lib.workspace)
    assert rec.moved_aside == ["v0001-sft"] and not final.exists()
    assert [v.id for v in lib.list_model_versions()] == ["base"]
    assert registry.next_version_id(lib, "sft") == "v0002-sft"
    assert _register(lib).id == "v0002-sft"  # registering works again (it raised FileExistsError for ever)


def test_stale_tmp_dirs_are_removed(lib):
    root = lib.workspace / "models"
    (root / ".tmp-v0001-sft-abcd" / "adapter").mkdir(parents=True)
    rec = registry.recover(lib, lib.workspace)
    assert rec.removed_tmp == [".tmp-v0001-sft-abcd"] and list(root.iterdir()) == []


def test_half_done_promote_and_rollback_are_completed(lib):
    v1, v2 = _register(lib), _register(lib)
    registry.promote(lib, v1.id)
    lib.set_model_status(v2.id, "promoted", note="gate: promote")  # killed before retiring v1
    assert registry.recover(lib, lib.workspace).superseded == [v1.id]
    assert lib.get_model_version(v1.id).status == "retired" and lib.serving_version().id == v2.id
    # rollback killed between re-promoting the parent and retiring the served version
    lib.set_model_status(v1.id, "promoted", note=f"restored by rollback of {v2.id}")
    assert registry.recover(lib, lib.workspace).rolled_back == [v2.id]
    assert lib.serving_version().id == v1.id and lib.get_model_version(v2.id).note.startswith(registry.ROLLED_BACK)
