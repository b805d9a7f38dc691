"""The ``pool:`` policy against real HTTP servers on 127.0.0.1 (tests/pool_fakes.py: scripted vLLM-like
servers that count requests and load/unload adapters): spreading, failover, adapter push, the spec."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from agent.policy import ModelSpec, SamplingParams, load_policy, parse_model_spec
from agent.policy.engine_server import free_port
from agent.policy.openai_backend import OpenAIBackendError
from agent.policy.pool_backend import AdapterPushError, PoolError, PoolPolicy
from tests.pool_fakes import FakeVLLM, fake_servers

PARAMS = SamplingParams(max_tokens=4)


@pytest.fixture
def two() -> Iterator[list[FakeVLLM]]:
    with fake_servers(2) as servers:
        yield servers


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def workers(pool: PoolPolicy, n_workers: int, total: int) -> list[tuple[int, str]]:
    """``n_workers`` loops, each sending one chat at a time (as episodes do), until ``total`` are answered."""
    todo, done = iter(range(total)), []

    async def worker() -> None:
        for i in todo:  # one iterator shared by every worker
            [c] = await pool.generate([chat(f"q{i}")], PARAMS)
            done.append((i, c.text))

    await asyncio.gather(*(worker() for _ in range(n_workers)))
    return done


def answered_right(done: list[tuple[int, str]], total: int) -> bool:
    return sorted(i for i, _ in done) == list(range(total)) and all(t.endswith(f"|q{i}") for i, t in done)


# ----------------------------------------------------------------------------------------- spreading
async def test_least_outstanding_sends_most_requests_to_the_fast_server() -> None:
    with fake_servers(1, delay=0.5) as [slow], fake_servers(1, delay=0.005) as [fast]:
        pool = PoolPolicy([slow.base_url, fast.base_url], "base-model")
        done = await workers(pool, 4, 60)
        await pool.aclose()
    assert answered_right(done, 60)
    assert len(slow.answered) + len(fast.answered) == 60
    # round robin or random would give the slow server ~30; least outstanding keeps ~2 in flight on it
    assert len(slow.answered) <= 15, (len(slow.answered), len(fast.answered))
    assert pool.completed() == {slow.base_url: len(slow.answered), fast.base_url: len(fast.answered)}


async def test_equal_servers_split_evenly_and_ties_go_round_robin(two: list[FakeVLLM]) -> None:
    a, b = two
    for s in two:
        s.delay = 0.01
    pool = PoolPolicy([a.base_url, b.base_url], "base-model")
    done = await workers(pool, 4, 80)
    assert answered_right(done, 80)
    assert 28 <= len(a.answered) <= 52 and len(a.answered) + len(b.answered) == 80
    sequential = await workers(pool, 1, 10)  # every pick is a tie (nothing in flight): strict alternation
    servers = [text.split("|")[0] for _, text in sorted(sequential)]
    assert all(x != y for x, y in zip(servers, servers[1:], strict=False)) and set(servers) == {a.base_url, b.base_url}
    await pool.aclose()


# ------------------------------------------------------------------------------------------ failover
async def test_a_server_killed_mid_run_loses_no_request(two: list[FakeVLLM]) -> None:
    a, b = two
    a.delay = b.delay = 0.02
    a.die_after = 5  # answers 5, then drops the connections in flight and refuses new ones
    pool = PoolPolicy([a.base_url, b.base_url], "base-model")
    out = await pool.generate([chat(f"q{i}") for i in range(40)], PARAMS)
    assert [c.text.split("|")[-1] for c in out] == [f"q{i}" for i in range(40)]
    assert a.dead and len(a.answered) == 5 and len(b.answered) == 35
    more = await workers(pool, 4, 12)  # the dead server is skipped (down), nothing fails
    assert answered_right(more, 12) and len(b.answered) == 47
    await pool.aclose()


async def test_a_failing_server_is_skipped_then_used_again_after_its_down_time(two: list[FakeVLLM]) -> None:
    a, b = two
    pool = PoolPolicy([a.base_url, b.base_url], "base-model", down_s=0.3)
    a.fail_status = 503
    done = await workers(pool, 1, 6)
    assert answered_right(done, 6) and len(b.answered) == 6 and len(a.routes("/v1/chat/completions")) == 1
    a.fail_status = None
    await asyncio.sleep(0.35)
    done = await workers(pool, 1, 6)
    assert answered_right(done, 6) and len(a.answered) == 3 and len(b.answered) == 9
    await pool.aclose()


async def test_all_servers_down_is_one_error_naming_every_server() -> None:
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]  # nothing listens there
    pool = load_policy(f"pool:{urls[0]},{urls[1]}#base-model")
    for _ in range(2):  # the second call finds both marked down and says so at once
        start = time.monotonic()
        with pytest.raises(PoolError) as info:
            await pool.generate([chat("x")], PARAMS)
        message = str(info.value)
        assert message.startswith("every server of the pool is down (2)")
        assert all(f"{u}: POST {u}/chat/completions failed after 1 tries: ConnectError" in message for u in urls)
        assert time.monotonic() - start < 2.0
    await pool.aclose()


async def test_a_bad_request_fails_at_once_without_failover(two: list[FakeVLLM]) -> None:
    pool = PoolPolicy([s.base_url for s in two], "base-model")
    with pytest.raises(OpenAIBackendError, match="HTTP 400.*maximum context length") as info:
        await pool.generate([chat("BAD")], PARAMS)
    assert not isinstance(info.value, PoolError)
    assert sum(len(s.routes("/v1/chat/completions")) for s in two) == 1
    await pool.aclose()


# ------------------------------------------------------------------------------------------ adapters
async def test_push_loads_the_adapter_on_every_server_then_switches(two: list[FakeVLLM]) -> None:
    a, b = two
    pool = load_policy(f"pool:{a.base_url},{b.base_url}#base-model", served_names={"v3": "lora-v3"})
    pool.set_adapter("v1", "/adapters/v1")
    for s in two:
        assert s.routes("/v1/load_lora_adapter") == [{"lora_name": "v1", "lora_path": "/adapters/v1"}]
    assert (pool.version, pool.model) == ("v1", "v1")
    out = await pool.generate([chat(f"q{i}") for i in range(6)], PARAMS)
    assert {c.model_version for c in out} == {"v1"} and set(a.answered) == set(b.answered) == {"v1"}
    pool.set_adapter("v3", "/adapters/v3")  # served under its served_names name
    assert a.loaded == b.loaded == {"v1": "/adapters/v1", "lora-v3": "/adapters/v3"} and pool.model == "lora-v3"
    pool.set_adapter("v1", "/adapters/v1")  # pushed before: a name switch, no new load
    assert all(len(s.routes("/v1/load_lora_adapter")) == 2 for s in two) and pool.model == "v1"
    pool.set_adapter("base", None)
    [c] = await pool.generate([chat("q")], PARAMS)
    assert c.model_version == "base" and "|base-model|" in c.text
    await pool.aclose()


@pytest.mark.parametrize("failure", ["refuses", "is down"])
async def test_push_that_one_server_refuses_keeps_the_old_version(two: list[FakeVLLM], failure: str) -> None:
    a, b = two
    pool = PoolPolicy([a.base_url, b.base_url], "base-model")
    if failure == "refuses":
        b.refuse_load = "LoRA rank 128 is greater than max_lora_rank 64"
    else:
        b.kill()
    with pytest.raises(AdapterPushError) as info:
        pool.set_adapter("v1", "/adapters/v1")
    message = str(info.value)
    assert message.startswith("adapter 'v1' (/adapters/v1) did not load on every server, so the pool keeps serving 'base'")
    cause = "HTTP 500: LoRA rank 128 is greater than max_lora_rank 64" if failure == "refuses" else "ConnectError"
    assert f"{b.base_url}: " in message and cause in message and f"{a.base_url}: took it, unloaded again" in message
    assert list(info.value.failed) == [b.base_url]
    assert a.loaded == {} and a.routes("/v1/unload_lora_adapter") == [{"lora_name": "v1"}]
    assert (pool.version, pool.model) == ("base", "base-model")
    if failure == "refuses":
        [c] = await pool.generate([chat("q")], PARAMS)
        assert c.model_version == "base" and "|base-model|" in c.text
        b.refuse_load = None  # fixed: the same push now goes through
        pool.set_adapter("v1", "/adapters/v1")
        assert a.loaded == b.loaded == {"v1": "/adapters/v1"} and pool.version == "v1"
    await pool.aclose()


async def test_a_server_that_already_had_the_adapter_keeps_it_when_a_push_fails(two: list[FakeVLLM]) -> None:
    a, b = two
    a.loaded["v1"] = "/adapters/v1"  # e.g. started with --lora-modules v1=...
    b.refuse_load = "boom"
    with pytest.raises(AdapterPushError, match=f"{b.base_url}: POST {b.base_url}/load_lora_adapter: HTTP 500: boom"):
        PoolPolicy([a.base_url, b.base_url], "base-model").set_adapter("v1", "/adapters/v1")
    assert a.loaded == {"v1": "/adapters/v1"} and not a.routes("/v1/load_lora_adapter") and not a.routes("/v1/unload_lora_adapter")


async def test_a_restarted_server_gets_the_served_adapter_again(two: list[FakeVLLM]) -> None:
    a, b = two
    pool = load_policy(f"pool:{a.base_url},{b.base_url}#base-model", adapter_path="/adapters/v1", version="v1")
    assert a.loaded == b.loaded == {"v1": "/adapters/v1"}  # load_policy pushed it
    a.loaded.clear()  # a restart loses runtime-loaded adapters: requests for v1 get 404 there
    done = await workers(pool, 2, 10)
    assert answered_right(done, 10) and a.loaded == {"v1": "/adapters/v1"}
    assert len(a.routes("/v1/load_lora_adapter")) == 2 and set(a.answered) == {"v1"} and a.answered
    await pool.aclose()


async def test_a_server_without_the_runtime_adapter_api_is_named_with_the_fix(two: list[FakeVLLM]) -> None:
    a, b = two
    b.load = lambda body: (404, {"detail": "Not Found"})  # vllm serve without VLLM_ALLOW_RUNTIME_LORA_UPDATING
    with pytest.raises(AdapterPushError, match="HTTP 404.*VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora"):
        PoolPolicy([a.base_url, b.base_url], "base-model").set_adapter("v1", "/adapters/v1")
    assert a.loaded == {}


async def test_an_adapter_path_the_servers_cannot_read_is_vllms_404_without_the_api_hint(two: list[FakeVLLM]) -> None:
    for s in two:
        s.can_read = lambda path: not path.startswith("/elsewhere/")
    with pytest.raises(AdapterPushError) as info:
        PoolPolicy([s.base_url for s in two], "base-model").set_adapter("v1", "/elsewhere/v1")
    message = str(info.value)
    assert message.count("HTTP 404: Loading lora v1 failed: No adapter found for /elsewhere/v1") == 2
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in message and set(info.value.failed) == {s.base_url for s in two}


# ---------------------------------------------------------------------------------------------- spec
@pytest.mark.parametrize(("spec", "parsed"), [
    ("pool:http://a:8000/v1/,https://b/v1#m/n", ModelSpec("pool", "http://a:8000/v1,https://b/v1", "m/n")),
    ("pool: http://a/v1 , http://b/v1 , http://c/v1 #m", ModelSpec("pool", "http://a/v1,http://b/v1,http://c/v1", "m")),
    ("pool:http://a/v1#m", ModelSpec("pool", "http://a/v1", "m")),
])
def test_pool_specs_round_trip(spec: str, parsed: ModelSpec) -> None:
    assert parse_model_spec(spec) == parsed and parse_model_spec(str(parsed)) == parsed
    assert parsed.urls == parsed.path.split(",")


@pytest.mark.parametrize(("spec", "says"), [
    ("pool:", "not an http(s) base URL: ''"),
    ("pool:http://a/v1,http://b/v1", "no model after '#'"),
    ("pool:http://a/v1,http://b/v1#", "no model after '#'"),
    ("pool:http://a/v1,,http://b/v1#m", "not an http(s) base URL: ''"),
    ("pool:http://a/v1,b:8000/v1#m", "not an http(s) base URL: 'b:8000/v1'"),
    ("pool:http://a/v1,http://a/v1/#m", "http://a/v1 listed twice"),
])
def test_bad_pool_specs_say_what_is_wrong_and_the_form(spec: str, says: str) -> None:
    with pytest.raises(ValueError) as info:
        load_policy(spec)
    assert says in str(info.value) and "pool:<base_url>,<base_url>[,...]#<model>" in str(info.value)


def test_several_urls_in_an_openai_spec_point_to_the_pool_form() -> None:
    with pytest.raises(ValueError, match=r"several servers form a pool: pool:http://a/v1,http://b/v1#m"):
        parse_model_spec("openai:http://a/v1,http://b/v1#m")
    with pytest.raises(ValueError, match=r"'pool:<base_url>,<base_url>\[,\.\.\.\]#<model>'"):
        parse_model_spec("ollama:llama3")


# ------------------------------------------------------------------------------------ engine start
def test_runtime_lora_enables_lora_and_vllms_adapter_api_only_when_asked() -> None:
    from agent.policy.engine_server import serve_command, serve_env

    plain, runtime = serve_command("/m", 8011, {}), serve_command("/m", 8011, {}, runtime_lora=True)
    assert "--enable-lora" not in plain and "--enable-lora" in runtime and "--lora-modules" not in runtime
    assert runtime[runtime.index("--max-lora-rank") + 1] == "64"
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in serve_env({}) and \
        serve_env({}, runtime_lora=True)["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"


def test_engine_status_and_stop_take_a_state_file(tmp_path) -> None:
    from typer.testing import CliRunner

    from agent.cli import app

    state = tmp_path / "second.json"
    status = CliRunner().invoke(app, ["engine", "status", "--state", str(state)])
    assert status.exit_code == 1 and "no engine server is running" in status.output
    stop = CliRunner().invoke(app, ["engine", "stop", "--state", str(state), "--json"])
    assert stop.exit_code == 0 and '"stopped": false' in stop.output
