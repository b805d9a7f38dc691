"""Benchmark of the experience library at scale: ingest, filtered search, rebuild from SQLite.

What it measures, in one run over N synthetic episodes spread over 4 environments:
- ingest rate through ``ExperienceLibrary.record_many`` (SQLite + MiniLM + Chroma) vs the pure MiniLM
  embedding rate on the same kind of texts (target: ≥ 0.9×, i.e. the store adds < 10 %);
- p50/p95 latency of a search with an env filter (index query only, and end to end with the query
  embedding) vs numpy brute-force top-k over the same vectors (target p50 ≤ 5 ms), plus recall@k;
- time to drop the index and rebuild it from SQLite (its stored vectors: no re-embedding);
- the cost of the index's self-healing (docs/reliability.md): search latency through the guarded path
  vs the bare Chroma query the library made before, alternating query by query in one run (target:
  ≤ 10 % slower), a guest's exact search over SQLite's vectors, and what the checks at open/close cost
  (seal hash, structural HNSW check, child probe).

    .venv/bin/python -m bench.micro.memory --quick          # N = 5,000
    .venv/bin/python -m bench.micro.memory --n 100000       # the full run (embedding dominates: minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from environments import Feedback, Task
from environments.base import Message
from memory import health
from memory.embed import default_embedder
from memory.hnsw_check import check_dir
from memory.library import ExperienceLibrary, SearchHit
from memory.records import Attempt, Episode, ModelCall

ENVS = ("arithmetic:digits=2", "countdown", "function_calling", "reasoning_gym:leg_counting")
TEMPLATES = (
    "What is {a} + {b} - {c}?",
    "Using the numbers {a}, {b} and {c}, write an equation that equals {d}.",
    "Call the weather tool for city number {a} on day {b} with units {c}.",
    "How many legs do {a} spiders, {b} dogs and {c} birds have in total?",
)


def synthetic(i: int, rng: random.Random) -> Episode:
    e = i % len(ENVS)
    a, b, c, d = (rng.randrange(1, 1000) for _ in range(4))
    q = TEMPLATES[e].format(a=a, b=b, c=c, d=d)
    task = Task(id=f"t{i}", env=ENVS[e], split="train", question=q, prompt=[Message(role="user", content=q)])
    ok = rng.random() < 0.5
    call = ModelCall(node="solve", messages=task.messages(), output=f"<answer>{a + b}</answer>",
                     prompt_tokens=30, completion_tokens=8)
    attempts = [Attempt(index=0, solve=call, answer=str(a + b),
                        feedback=Feedback.correct(str(a + b)) if ok else Feedback.failure("Wrong."))]
    if not ok:
        attempts[0].reflect = call.model_copy(update={"node": "reflect", "output": f"I mixed up {b} and {c}."})
        attempts.append(Attempt(index=1, solve=call.model_copy(update={"node": "retry"}), answer=str(d),
                                feedback=Feedback.correct(str(d)) if rng.random() < 0.4 else Feedback.failure("No.")))
    return Episode(id=f"ep-{i:08d}", env=ENVS[e], task=task, attempts=attempts, created_at=1.7e9 + i)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def bare_search(lib: ExperienceLibrary, vector: np.ndarray, env: str, k: int) -> list[SearchHit]:
    """What ``search_vector`` did before the index was guarded: the Chroma query, hits from its metadata."""
    return [SearchHit.from_metadata(m.id, m.score, m.metadata) for m in lib.index.query(env, vector, k)]


def bare_e2e(lib: ExperienceLibrary, text: str, env: str, k: int) -> list[SearchHit]:
    """What ``search`` did before: the pending-rows count, the query embedding, the bare query."""
    lib.store.count(env=env, unindexed_only=True)
    return bare_search(lib, lib.embedder.encode([text])[0], env, k)


def side_by_side(lib: ExperienceLibrary, qvecs: np.ndarray, queries: list[str], env: str, k: int) -> dict:
    """Old and new paths alternating per query (the machine's noise hits both alike)."""
    lat: dict[str, list[float]] = {"bare": [], "guarded": [], "bare_e2e": [], "guarded_e2e": []}

    def timed(name: str, fn, *args, **kwargs) -> None:
        t = time.perf_counter()
        fn(*args, **kwargs)
        lat[name].append(time.perf_counter() - t)

    for i, v in enumerate(qvecs):
        calls = [("bare", bare_search, (lib, v, env, k), {}), ("guarded", lib.search_vector, (v,), {"env": env, "k": k})]
        for name, fn, args, kwargs in calls if i % 2 else calls[::-1]:
            timed(name, fn, *args, **kwargs)
    for i, q in enumerate(queries[:100]):
        calls = [("bare_e2e", bare_e2e, (lib, q, env, k), {}), ("guarded_e2e", lib.search, (q,), {"env": env, "k": k})]
        for name, fn, args, kwargs in calls if i % 2 else calls[::-1]:
            timed(name, fn, *args, **kwargs)
    return lat


def detection_costs(work: Path, lib: ExperienceLibrary, qvecs: np.ndarray, env: str, k: int) -> dict:
    """Seconds for: closing (catch-up, seal), opening a sealed index, the structural check, the child
    probe, and a guest's first and later exact searches over SQLite's vectors."""
    out: dict[str, float] = {}
    t = time.perf_counter()
    lib.close()
    out["close_and_seal"] = time.perf_counter() - t
    out["index_mb"] = sum(f.stat().st_size for f in (work / "chroma").rglob("*") if f.is_file()) / 1e6
    t = time.perf_counter()
    health.inspect(work / "chroma", work / "chroma.seal.json")
    out["seal_check"] = time.perf_counter() - t
    t = time.perf_counter()
    check_dir(work / "chroma")
    out["structural_check"] = time.perf_counter() - t
    shutil.copytree(work / "chroma", work / "probed")  # opening a directory changes it: probe a copy
    t = time.perf_counter()
    health.probe(work / "probed", "ep")
    out["probe"] = time.perf_counter() - t
    t = time.perf_counter()
    owner = ExperienceLibrary(work, embedder=lib.embedder)
    out["open_sealed"] = time.perf_counter() - t
    if owner.keeper.healed:
        raise RuntimeError(f"the sealed index was rebuilt, the timing would be a rebuild's: {owner.keeper.healed}")
    guest = ExperienceLibrary(work, embedder=lib.embedder)
    t = time.perf_counter()
    guest.search_vector(qvecs[0], env=env, k=k)
    out["guest_first_search"] = time.perf_counter() - t
    guest_lat = []
    for v in qvecs[1:101]:
        t = time.perf_counter()
        guest.search_vector(v, env=env, k=k)
        guest_lat.append(time.perf_counter() - t)
    out["guest_p50_ms"], out["guest_p95_ms"] = pct(guest_lat, 50), pct(guest_lat, 95)
    guest.close()
    owner.close()
    return out


def _ingest(work: Path, emb, episodes: list, batch_size: int) -> dict:
    """Ingest ``episodes`` in batches; every 5th batch is also embedded alone (paired rates)."""
    n = len(episodes)
    # Paired measurement: every 5th batch is also embedded alone right before it is ingested, so both
    # rates see the same texts and the same load from other processes on a shared machine.
    lib = ExperienceLibrary(work, embedder=emb)
    pure_s = paired_s = 0.0
    paired_n = 0
    t0 = time.perf_counter()
    for b, start in enumerate(range(0, n, batch_size)):
        batch = episodes[start : start + batch_size]
        if b % 5 == 0:
            t = time.perf_counter()
            emb.encode([ep.summary_text() for ep in batch])
            pure_s += time.perf_counter() - t
            t = time.perf_counter()
            lib.record_many(batch)
            paired_s += time.perf_counter() - t
            paired_n += len(batch)
            print(f"  ingested {start + len(batch)}/{n}", flush=True)
        else:
            lib.record_many(batch)
    ingest_s = time.perf_counter() - t0 - pure_s
    ingest_rate = n / ingest_s
    embed_rate = paired_n / pure_s
    sample = range(paired_n)
    print(f"pure embedding: {embed_rate:.0f} texts/s; paired ingest {paired_n / paired_s:.0f}/s", flush=True)
    status = lib.index_status()
    print(f"ingest: {ingest_rate:.0f} episodes/s ({ingest_s:.1f} s); index {status['status']}", flush=True)

    return dict(lib=lib, pure_s=pure_s, paired_s=paired_s, paired_n=paired_n, ingest_s=ingest_s,
                ingest_rate=ingest_rate, embed_rate=embed_rate, sample=sample, status=status)


def _search(lib, emb, n: int, n_queries: int) -> dict:
    """Search latencies (index only, end to end, unfiltered, brute force), recall, guarded vs bare."""
    env = ENVS[0]
    queries = [synthetic(n + j, random.Random(j)).task.question for j in range(n_queries * len(ENVS))]
    queries = [q for j, q in enumerate(queries) if j % len(ENVS) == 0][: n_queries]
    qvecs = emb.encode(queries)
    got = lib.index.collection(env).get(include=["embeddings"])
    ids, matrix = np.asarray(got["ids"]), np.asarray(got["embeddings"], dtype=np.float32)
    k = 5
    index_lat, e2e_lat, brute_lat, recall = [], [], [], []
    for v in qvecs:
        t = time.perf_counter()
        hits = lib.search_vector(v, env=env, k=k)
        index_lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        scores = matrix @ v
        top = np.argpartition(-scores, k)[:k]
        top = top[np.argsort(-scores[top])]
        brute_lat.append(time.perf_counter() - t)
        recall.append(len({h.episode_id for h in hits} & set(ids[top].tolist())) / k)
    for q in queries[:50]:
        t = time.perf_counter()
        lib.search(q, env=env, k=k)
        e2e_lat.append(time.perf_counter() - t)
    unfiltered = []
    for v in qvecs[:50]:
        t = time.perf_counter()
        lib.search_vector(v, success=True, k=k)
        unfiltered.append(time.perf_counter() - t)
    lat = side_by_side(lib, qvecs, queries, env, k)
    slow = pct(lat["guarded"], 50) / pct(lat["bare"], 50) - 1
    slow_e2e = pct(lat["guarded_e2e"], 50) / pct(lat["bare_e2e"], 50) - 1
    print(f"guarded vs bare search p50: {slow:+.1%} (index only), {slow_e2e:+.1%} (end to end)", flush=True)

    return dict(env=env, queries=queries, qvecs=qvecs, matrix=matrix, k=k, index_lat=index_lat, e2e_lat=e2e_lat,
                brute_lat=brute_lat, recall=recall, unfiltered=unfiltered, lat=lat, slow=slow, slow_e2e=slow_e2e)


def _render(n: int, batch_size: int, m: dict) -> str:
    """The docs/benchmarks.md section from the measurements ``m`` (ingest, search, rebuild, detection)."""
    (pure_s, paired_s, paired_n, ingest_s, ingest_rate, embed_rate, sample, status, matrix, k, index_lat, e2e_lat, brute_lat, recall, unfiltered, lat, slow, slow_e2e, rebuilt, rebuild_s, cost) = (
        m[key] for key in ('pure_s', 'paired_s', 'paired_n', 'ingest_s', 'ingest_rate', 'embed_rate', 'sample', 'status', 'matrix', 'k', 'index_lat', 'e2e_lat', 'brute_lat', 'recall', 'unfiltered', 'lat', 'slow', 'slow_e2e', 'rebuilt', 'rebuild_s', 'cost'))
    ratio = pure_s / paired_s
    body = f"""## Experience library (memory/)

N = {n:,} synthetic episodes over {len(ENVS)} environments ({len(matrix):,} in the searched env), MiniLM-L6 on CPU,
embedded Chroma (PersistentClient), batches of {batch_size} through `record_many`.

| metric | value | target |
|---|---|---|
| pure embedding rate (every 5th batch, {len(sample):,} texts) | {embed_rate:,.0f} texts/s | |
| ingest rate through the library, same batches | {paired_n / paired_s:,.0f} episodes/s | |
| ingest / embedding (paired) | {ratio:.2f}× | ≥ 0.9× {"✓" if ratio >= 0.9 else "✗"} |
| ingest rate over all N | {ingest_rate:,.0f} episodes/s ({ingest_s:,.1f} s) | |
| search, env filter, index only: p50 / p95 | {pct(index_lat, 50):.2f} / {pct(index_lat, 95):.2f} ms | p50 ≤ 5 ms {"✓" if pct(index_lat, 50) <= 5 else "✗"} |
| search, env filter, with query embedding: p50 / p95 | {pct(e2e_lat, 50):.2f} / {pct(e2e_lat, 95):.2f} ms | |
| search, all envs + success filter, index only: p50 / p95 | {pct(unfiltered, 50):.2f} / {pct(unfiltered, 95):.2f} ms | |
| numpy brute-force top-{k} over the same env's vectors: p50 / p95 | {pct(brute_lat, 50):.2f} / {pct(brute_lat, 95):.2f} ms | |
| HNSW recall@{k} vs brute force | {np.mean(recall):.3f} | |
| rebuild the index from SQLite's stored vectors | {rebuild_s:,.1f} s ({rebuilt / rebuild_s:,.0f} episodes/s) | |

Index status after ingest: {status["status"]}. Embedding dominates ingest; a rebuild upserts the vectors
SQLite keeps (schema 2) and embeds nothing.

Self-healing on the hot path — the same queries, old and new path alternating (docs/reliability.md):

| search, env filter | before (bare Chroma query) p50 / p95 | after (guarded) p50 / p95 | p50 change | target |
|---|---|---|---|---|
| index only | {pct(lat["bare"], 50):.2f} / {pct(lat["bare"], 95):.2f} ms | {pct(lat["guarded"], 50):.2f} / {pct(lat["guarded"], 95):.2f} ms | {slow:+.1%} | ≤ +10 % {"✓" if slow <= 0.10 else "✗"} |
| with query embedding | {pct(lat["bare_e2e"], 50):.2f} / {pct(lat["bare_e2e"], 95):.2f} ms | {pct(lat["guarded_e2e"], 50):.2f} / {pct(lat["guarded_e2e"], 95):.2f} ms | {slow_e2e:+.1%} | ≤ +10 % {"✓" if slow_e2e <= 0.10 else "✗"} |

Off the hot path (index of {cost["index_mb"]:.0f} MB on disk): close with catch-up and seal {cost["close_and_seal"]:.2f} s; open a
sealed index {cost["open_sealed"]:.2f} s, of which the seal check {cost["seal_check"]:.2f} s; after an unclean exit, the
structural HNSW check {cost["structural_check"]:.2f} s and the child probe {cost["probe"]:.2f} s. A guest process (another
process owns the index) searches SQLite's vectors exactly: first search {cost["guest_first_search"]:.2f} s (reads them),
then p50 / p95 {cost["guest_p50_ms"]:.2f} / {cost["guest_p95_ms"]:.2f} ms.
"""
    return body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="episodes to ingest")
    parser.add_argument("--quick", action="store_true", help="N = 5000")
    parser.add_argument("--batch", type=int, default=256, help="episodes per record_many call")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the workspace here (default: a temp dir)")
    args = parser.parse_args(argv)
    n = 5000 if args.quick else args.n
    rng = random.Random(0)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-memory-"))
    if work.exists():
        shutil.rmtree(work)
    emb = default_embedder()
    emb.encode(["warm up"])

    print(f"building {n} synthetic episodes ...", flush=True)
    episodes = [synthetic(i, rng) for i in range(n)]
    m = _ingest(work, emb, episodes, args.batch)
    lib = m["lib"]
    m.update(_search(lib, emb, n, args.queries))
    env, qvecs, k = m["env"], m["qvecs"], m["k"]
    t = time.perf_counter()
    rebuilt = lib.reindex()
    rebuild_s = time.perf_counter() - t
    print(f"rebuild: {rebuilt} in {rebuild_s:.1f} s", flush=True)
    cost = detection_costs(work, lib, qvecs, env, k)
    print(f"detection: {cost}", flush=True)

    m.update(rebuilt=rebuilt, rebuild_s=rebuild_s, cost=cost)
    body = _render(n, args.batch, m)
    print(body)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    from bench._report import write_section

    command = "python -m bench.micro.memory " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"wrote {write_section('memory', body, command.strip())}")


if __name__ == "__main__":
    main()
