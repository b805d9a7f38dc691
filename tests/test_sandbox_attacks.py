"""The attack suite (environments/sandbox/attacks.py): every attack contained and scored 0.

Each of the 26 attacks runs twice, with the audit hook (the default) and without it, to show that the
OS-level layers alone contain it: no escape (canary files, the 127.0.0.1 listener, the sentinel process,
secrets, leftover processes of the sandbox uid) and no fake pass (reward 0).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from environments import get_environment
from environments.sandbox import attacks, isolation

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the sandbox needs POSIX")


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    with attacks.Rig(tmp_path_factory.mktemp("attacks")).up() as r:
        yield r
    assert r.sentinel_alive, "an attack killed the sentinel process"


def test_there_are_at_least_20_attacks():
    assert len(attacks.ATTACKS) >= 20


@pytest.mark.parametrize("audit_hook", [True, False], ids=["hook", "no-hook"])
@pytest.mark.parametrize("name", sorted(attacks.ATTACKS))
def test_attack_is_contained_and_scores_zero(rig, name, audit_hook):
    result = attacks.run_attack(rig, name, audit_hook=audit_hook)
    assert result.escapes == [], f"{name} escaped: {result.escapes}"
    assert result.reward == 0.0, f"{name} faked a pass: {result.message}"
    assert result.wall_s < attacks.TIMEOUT_S + 8, f"{name} was not stopped in time ({result.wall_s:.1f} s)"


def test_a_dropped_sitecustomize_does_not_reach_the_next_run(rig):
    attacks.run_attack(rig, "drop_pth_and_sitecustomize", audit_hook=False)
    env, task = attacks.attack_task()
    probe = "import sys\ndef add(a, b):\n    assert 'sitecustomize' not in sys.modules\n    return a + b"
    feedback = env.verify(task, f"<answer>{probe}</answer>")
    assert feedback.success, feedback.message


def test_attacks_through_the_public_verify(rig):
    """The same verdicts through Environment.verify, the path episodes and trainers use."""
    env, task = attacks.attack_task()
    for name in ("eq_always_true", "fake_all_passed", "os_exit_before_tests", "write_outside"):
        feedback = env.verify(task, f"<answer>{rig.source(name)}</answer>")
        assert not feedback.success and feedback.reward == 0.0, name
    assert not any(Path(p).exists() for p in rig.canaries)


def test_isolation_layers_on_this_machine():
    layers = isolation()
    assert {"rlimits", "no_new_privs", "audit_hook"} <= set(layers)
    if os.geteuid() == 0:
        assert {"mounts", "pid_namespace", "network", "uid"} <= set(layers), layers


def test_a_correct_answer_still_passes():
    env = get_environment("python_code:min_level=1,max_level=1")
    _, task = attacks.attack_task()
    assert env.verify(task, "<answer>def add(a, b):\n    return a + b</answer>").success
