"""The CLI fed what a new user types by mistake: count clean errors, tracebacks and nonsense accepted.

    python -m tests.cli_bad_input

Each case runs the real Typer app in this process (scripted policy ``tests.daemon_scripted``, no model).
A case is a *clean error* when it exits non-zero with an ``error:`` line, raises nothing but SystemExit,
writes nothing (no new workspace, no new rows in the filled one, the file passed as a workspace unchanged)
and passes its own check (e.g. ``status --json`` still prints JSON). *Traceback*: any other exception.
*Nonsense accepted*: exit 0. Anything else (non-zero but unclear, or something written) is *unclear*.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

SCRIPTED = "python:tests.daemon_scripted:policy"


def _rows(ws: Path) -> int:
    with sqlite3.connect(ws / "experience.db") as db:
        return sum(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("episodes", "runs", "model_versions"))


def _setup(root: Path) -> dict[str, Path]:
    from environments import reload_entry_points
    from memory.library import ExperienceLibrary
    from tests.daemon_scripted import HashEmbedder
    from tests.memory_factories import make_episode

    p = {"file": root / "ws.txt", "typo": root / "typo", "new": root / "new", "filled": root / "filled",
         "gone": root / "gone", "answer": root / "answer.txt", "cfg": root / "bad_overrides.toml"}
    p["file"].write_text("not a workspace")
    p["answer"].write_text("<answer>1</answer>")
    p["cfg"].write_text(f'model = "{SCRIPTED}"\n[[environments]]\nspec = "arithmetic"\n[training.overrides]\nlora_r = 0\n')
    with ExperienceLibrary(p["filled"], embedder=HashEmbedder()) as lib:
        for i in range(3):
            lib.record(make_episode(i, env="arithmetic"))
        lib.list_model_versions()  # the base row, which any read would add: not counted as a write
    with ExperienceLibrary(p["gone"], embedder=HashEmbedder()) as lib:
        for i in range(3):
            lib.record(make_episode(i, env="uninstalled_plugin_env", first_success=False, success=True))
    dist = root / "plugins" / "se_broken_demo-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: se-broken-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[selfevolve.environments]\nbroken_demo = se_broken_missing_module:Env\n")
    sys.path.insert(0, str(root / "plugins"))
    try:
        reload_entry_points()
    except Exception:  # noqa: BLE001 - the old registry raised here; the cases below then show the damage
        pass

    register_raising_env()
    return p


def register_raising_env(name: str = "raising_check_demo") -> None:
    """An environment whose ``check()`` raises (a scorer bug): the CLI must say so in one line."""
    from environments import Environment, register_environment

    @register_environment(name)
    class Raising(Environment):
        def generate(self, rng):
            return f"Say {rng.randint(0, 9999)}", {}, 1.0

        def check(self, task, answer):
            raise ZeroDivisionError("scorer bug")


def _cases(p: dict[str, Path]) -> list[tuple[list[str], Callable[[str], bool] | None]]:
    f, typo, new, filled = str(p["file"]), str(p["typo"]), str(p["new"]), str(p["filled"])
    run = ["run", "--env", "arithmetic", "-n", "1", "--model", SCRIPTED]

    def json_out(stdout: str) -> bool:
        try:
            return json.loads(stdout).get("status") == "never run"
        except ValueError:
            return False

    return [
        (["envs", "sample", "broken_demo"], None),
        (["envs", "check", "raising_check_demo", str(p["answer"])], None),
        (["envs", "sample", "arithmetic:digits=0"], lambda out: "\n" not in out.strip()),
        (["envs", "sample", "arithmetic:digts=2"], lambda out: "\n" not in out.strip()),
        (["envs", "sample", "nosuchenv"], None),
        (["envs", "sample", "arithmetic", "--split", "test"], None),
        (["memory", "stats", "-w", f], None), ([*run, "-w", f], None), (["models", "list", "-w", f], None),
        (["status", "-w", f], None), ([*run, "-w", "/proc/selfevolve-ws"], None),
        (["memory", "stats", "-w", typo], None), (["memory", "search", "x", "-w", typo], None),
        (["models", "list", "-w", typo], None), (["status", "-w", typo], None), (["train", "-w", typo], None),
        (["status", "--json", "-w", filled], json_out),
        ([*run[:-1], "hf:/no/such/model", "-w", new], None),
        (["memory", "search", "x", "--env", "nosuch_env", "-w", filled], None),
        (["memory", "export", str(p["typo"]) + ".jsonl", "--env", "nosuch_env", "-w", filled], None),
        (["memory", "show", "ep-nope", "-w", filled], None),
        (["eval", "--env", "arithmetic", "-n", "2", "--base-model", SCRIPTED, "--against", "v9999-nope", "-w", filled], None),
        (["eval", "--env", "arithmetic", "--primary", "best", "-w", filled], None),
        (["models", "promote", "v9999-nope", "-w", filled], None),
        (["train", "--method", "sft", "--steps", "1", "-w", str(p["gone"])], None),
        (["train", "--method", "ppo", "-w", filled], None),
        (["daemon", "-c", str(p["cfg"]), "-w", new], None),
        (["daemon", "-c", str(p["typo"]) + ".toml", "-w", new], None),
        ([*run[:3], "--split", "test", "-w", new], None),
    ]


def classify(argv: list[str], check: Callable[[str], bool] | None, p: dict[str, Path]) -> str:
    from agent.cli import app

    before = _rows(p["filled"])
    r = CliRunner().invoke(app, argv)
    written = p["typo"].exists() or p["new"].exists() or p["file"].read_text() != "not a workspace" \
        or _rows(p["filled"]) != before
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        return "traceback"
    if r.exit_code == 0:
        return "nonsense accepted"
    ok = "error:" in r.stderr and not written and (check is None or check(r.stdout if check.__name__ == "json_out"
                                                                           else r.stderr))
    return "clean error" if ok else "unclear"


def main() -> dict[str, int]:
    import shutil

    counts = {"clean error": 0, "traceback": 0, "nonsense accepted": 0, "unclear": 0}
    with tempfile.TemporaryDirectory() as tmp:
        p = _setup(Path(tmp))
        cases = _cases(p)
        for argv, check in cases:
            outcome = classify(argv, check, p)
            counts[outcome] += 1
            if outcome != "clean error":
                print(f"  {outcome}: selfevolve {' '.join(a.replace(tmp, '$TMP') for a in argv)}")
            for d in (p["typo"], p["new"]):
                shutil.rmtree(d, ignore_errors=True)
    print("| tried | clean error | traceback | nonsense accepted | unclear (or wrote something) |")
    print("|---|---|---|---|---|")
    print(f"| {len(cases)} | {counts['clean error']} | {counts['traceback']} | {counts['nonsense accepted']} | "
          f"{counts['unclear']} |")
    return counts


if __name__ == "__main__":
    main()
