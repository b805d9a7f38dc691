"""Benchmark of the experience library at scale: ingest, filtered search, rebuild from SQLite.

What it measures, in one run over N synthetic episodes spread over 4 environments:
- ingest rate through ``ExperienceLibrary.record_many`` (SQLite + MiniLM + Chroma) vs the pure MiniLM
  embedding rate on the same kind of texts (target: ≥ 0.9×, i.e. the store adds < 10 %);
- p50/p95 latency of a search with an env filter (index query only, and end to end with the query
  embedding) vs numpy brute-force top-k over the same vectors (target p50 ≤ 5 ms), plus recall@k;
- time to drop the index and rebuild it from SQLite.

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
from memory.embed import default_embedder
from memory.library import ExperienceLibrary
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


def ingest(lib: ExperienceLibrary, emb, episodes: list[Episode], batch_size: int) -> dict:
    """Record every episode in batches. Paired measurement: every 5th batch is also embedded alone right
    before it is ingested, so both rates see the same texts and the same load from other processes."""
    n, pure_s, paired_s, paired_n = len(episodes), 0.0, 0.0, 0
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
    out = {"pure_s": pure_s, "paired_s": paired_s, "paired_n": paired_n, "ingest_s": ingest_s,
           "ingest_rate": n / ingest_s, "embed_rate": paired_n / pure_s}
    print(f"pure embedding: {out['embed_rate']:.0f} texts/s; paired ingest {paired_n / paired_s:.0f}/s", flush=True)
    return out


def search_latency(lib: ExperienceLibrary, emb, n: int, n_queries: int, k: int = 5) -> dict:
    """Latency of filtered search (index only, end to end, all envs) vs numpy brute force, and recall@k."""
    env = ENVS[0]
    queries = [synthetic(n + j, random.Random(j)).task.question for j in range(n_queries * len(ENVS))]
    queries = [q for j, q in enumerate(queries) if j % len(ENVS) == 0][:n_queries]
    qvecs = emb.encode(queries)
    got = lib.index.collection(env).get(include=["embeddings"])
    ids, matrix = np.asarray(got["ids"]), np.asarray(got["embeddings"], dtype=np.float32)
    index_lat, e2e_lat, brute_lat, recall, unfiltered = [], [], [], [], []
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
    for v in qvecs[:50]:
        t = time.perf_counter()
        lib.search_vector(v, success=True, k=k)
        unfiltered.append(time.perf_counter() - t)
    return {"k": k, "in_env": len(matrix), "index": index_lat, "e2e": e2e_lat, "brute": brute_lat,
            "unfiltered": unfiltered, "recall": float(np.mean(recall))}


def render(n: int, batch: int, ing: dict, lat: dict, status: dict, rebuilt: int, rebuild_s: float) -> str:
    ratio, k = ing["pure_s"] / ing["paired_s"], lat["k"]
    index_lat, e2e_lat, unfiltered, brute_lat = lat["index"], lat["e2e"], lat["unfiltered"], lat["brute"]
    return f"""## Experience library (memory/)

N = {n:,} synthetic episodes over {len(ENVS)} environments ({lat["in_env"]:,} in the searched env), MiniLM-L6 on CPU,
embedded Chroma (PersistentClient), batches of {batch} through `record_many`.

| metric | value | target |
|---|---|---|
| pure embedding rate (every 5th batch, {ing["paired_n"]:,} texts) | {ing["embed_rate"]:,.0f} texts/s | |
| ingest rate through the library, same batches | {ing["paired_n"] / ing["paired_s"]:,.0f} episodes/s | |
| ingest / embedding (paired) | {ratio:.2f}× | ≥ 0.9× {"✓" if ratio >= 0.9 else "✗"} |
| ingest rate over all N | {ing["ingest_rate"]:,.0f} episodes/s ({ing["ingest_s"]:,.1f} s) | |
| search, env filter, index only: p50 / p95 | {pct(index_lat, 50):.2f} / {pct(index_lat, 95):.2f} ms | p50 ≤ 5 ms {"✓" if pct(index_lat, 50) <= 5 else "✗"} |
| search, env filter, with query embedding: p50 / p95 | {pct(e2e_lat, 50):.2f} / {pct(e2e_lat, 95):.2f} ms | |
| search, all envs + success filter, index only: p50 / p95 | {pct(unfiltered, 50):.2f} / {pct(unfiltered, 95):.2f} ms | |
| numpy brute-force top-{k} over the same env's vectors: p50 / p95 | {pct(brute_lat, 50):.2f} / {pct(brute_lat, 95):.2f} ms | |
| HNSW recall@{k} vs brute force | {lat["recall"]:.3f} | |
| rebuild the index from SQLite | {rebuild_s:,.1f} s ({rebuilt / rebuild_s:,.0f} episodes/s) | |

Index status after ingest: {status["status"]}. Embedding dominates both ingest and rebuild; the store
(SQLite transaction + Chroma upsert) is the rest.
"""


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
    lib = ExperienceLibrary(work, embedder=emb)
    ing = ingest(lib, emb, episodes, args.batch)
    status = lib.index_status()
    print(f"ingest: {ing['ingest_rate']:.0f} episodes/s ({ing['ingest_s']:.1f} s); index {status['status']}", flush=True)
    lat = search_latency(lib, emb, n, args.queries)
    t = time.perf_counter()
    rebuilt = lib.reindex()
    rebuild_s = time.perf_counter() - t
    lib.close()
    print(f"rebuild: {rebuilt} in {rebuild_s:.1f} s", flush=True)

    body = render(n, args.batch, ing, lat, status, rebuilt, rebuild_s)
    print(body)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    from bench._report import write_section

    command = "python -m bench.micro.memory " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"wrote {write_section('memory', body, command.strip())}")


if __name__ == "__main__":
    main()
