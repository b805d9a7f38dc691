"""The dashboard in a real headless browser: Debian's chromium driven by Playwright (no browser download).

The workspace holds recorded episodes (one with a failed attempt, critique, reflection and retry),
two versions with stored held-out eval results, a daemon state and a served completion rated through
``/v1/feedback``. The test loads ``/``, sees the learning curve, searches the library, filters it,
opens an episode's whole trajectory and the served episode's user comment, and checks the API-key
form of a protected server. A screenshot is written to ``$SELFEVOLVE_SCREENSHOTS`` when set.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import openai
import pytest

from agent.daemon import control
from agent.daemon.state import new_state
from agent.evaluate import EvalResult, store_result
from agent.serve import ServeConfig, create_app
from memory import ExperienceLibrary
from tests.daemon_scripted import HashEmbedder
from tests.memory_factories import make_episode
from tests.serve_scripted import live_server, register_adapter_version
from trainer.gate import TaskOutcome

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'")
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed: `apt-get install -y --no-install-recommends chromium` "
    "(bash .ci/run installs it)")


def _result(version: str, first: list[int], final: list[int]) -> EvalResult:
    outcomes = {f"t{i}": TaskOutcome(bool(a), bool(b)) for i, (a, b) in enumerate(zip(first, final, strict=True))}
    return EvalResult(env="arithmetic", version=version, n=len(first), seed=0, max_attempts=2, outcomes=outcomes)


def populate(lib: ExperienceLibrary, ws: Path) -> str:
    """Episodes, two evaluated versions (base → v0001 promoted), a daemon state; returns v0001's id."""
    for i in range(6):
        lib.record(make_episode(i, env="arithmetic", first_success=i % 2 == 0, success=i != 3))
    store_result(lib, _result("base", [1, 0, 0, 0, 1, 0, 0, 0], [1, 1, 0, 0, 1, 0, 0, 0]))
    v1 = register_adapter_version(lib, ws)
    store_result(lib, _result(v1.id, [1, 1, 1, 0, 1, 0, 1, 0], [1, 1, 1, 1, 1, 0, 1, 0]))
    state = new_state()
    state.update(status="stopped", stop_reason="budget: cycles 1 >= 1", cycles_completed=1, serving_version=v1.id,
                 last_gate={"candidate": v1.id, "current": "base", "promote": True, "tripwire": None,
                            "reason": "first try 62.5% vs 25.0% (+37.5 pts) on 8 paired tasks"},
                 budget={"cycles": [1, 1], "episodes": [6, 100]}, accuracy_by_version={
                     "base": {"first": 0.25, "final": 0.375, "n": 8}, v1.id: {"first": 0.625, "final": 0.75, "n": 8}})
    control.write_json_atomic(control.state_path(ws), state)
    return v1.id


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def _page(browser, errors: list[str]):
    page = browser.new_page(viewport={"width": 1400, "height": 1500})
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.set_default_timeout(20_000)
    return page


def test_dashboard_in_a_real_browser(tmp_path: Path, browser):
    ws = tmp_path / "ws"
    with ExperienceLibrary(ws, embedder=HashEmbedder()) as lib:
        v1 = populate(lib, ws)
        app = create_app(ServeConfig(workspace=ws, model="python:tests.serve_scripted:policy"), library=lib)
        with live_server(app) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
            r = client.chat.completions.create(model="selfevolve", messages=[{"role": "user", "content": "Name a prime."}])
            rated = httpx.post(url + "/v1/feedback", json={"completion_id": r.id, "success": False,
                                                           "comment": "that is not a prime"})
            assert rated.status_code == 200
            errors: list[str] = []
            page = _page(browser, errors)
            page.goto(url + "/")
            page.wait_for_selector("#tiles .tile")
            assert page.inner_text("#serving") == v1
            assert "1 rated" in page.inner_text("#served") or "1 served, 1 rated" in page.inner_text("#served")

            page.wait_for_selector("svg.curve path.series-first")
            curves = page.locator("svg.curve")
            assert curves.count() == 2  # the stored eval setting, and the daemon's gate
            d = page.locator("svg.curve").first.locator("path.series-first").get_attribute("d")
            assert d.count("M") == 1 and d.count("L") == 1  # two versions, one line
            assert page.locator("svg.curve").first.locator("line.ci-first").count() == 2

            daemon = page.inner_text("#daemon")
            assert "PROMOTED" in daemon and "none tripped" in daemon and "budget: cycles 1 >= 1" in daemon

            page.fill("#q", "What is 13 + 26?")
            page.click("#search-form button")
            page.wait_for_selector("#episodes p:has-text('most similar')")
            first = page.locator(".episode-row").first
            assert "What is 13 + 26?" in first.inner_text()
            first.click()
            page.wait_for_selector("#episode .attempt")
            trajectory = page.inner_text("#episode")
            assert page.locator("#episode .attempt").count() == 2
            for part in ("Attempt 1 (solve)", "Attempt 2 (retry)", "REFLECTION", "I forgot to carry the one",
                         "FEEDBACK", "Wrong: the sum is off by one."):
                assert part in trajectory, part

            page.select_option("#f-success", "false")
            page.fill("#q", "")
            page.click("#search-form button")
            page.wait_for_function("document.querySelectorAll('.episode-row').length === 2")
            assert all("✗ failure" in t for t in page.locator(".episode-row").all_inner_texts())

            page.select_option("#f-env", "served")
            page.click("#search-form button")
            page.wait_for_selector(".episode-row:has-text('Name a prime.')")
            page.locator(".episode-row").first.click()
            page.wait_for_selector("#episode :text('that is not a prime')")
            if os.environ.get("SELFEVOLVE_SCREENSHOTS"):
                page.screenshot(path=str(Path(os.environ["SELFEVOLVE_SCREENSHOTS"]) / "serve-dashboard-test.png"),
                                full_page=True)
            assert not errors, errors


def test_dashboard_asks_for_the_api_key(tmp_path: Path, browser):
    ws = tmp_path / "ws"
    with ExperienceLibrary(ws, embedder=HashEmbedder()) as lib:
        lib.record(make_episode(0, env="arithmetic"))
        app = create_app(ServeConfig(workspace=ws, model="python:tests.serve_scripted:policy", api_key="k3y"),
                         library=lib)
        with live_server(app) as url:
            errors: list[str] = []
            page = _page(browser, errors)
            page.goto(url + "/")
            page.wait_for_selector("#auth:not(.hidden)")
            assert page.inner_text("#live") == "API key needed"
            page.fill("#key", "k3y")
            page.click("#auth button")
            page.wait_for_selector(".episode-row")
            assert page.locator("#auth.hidden").count() == 1
            time.sleep(0.1)
            assert all("401" in e or "Unauthorized" in e for e in errors), errors  # only the refused fetches
