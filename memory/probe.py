"""The index probe: open an embedded Chroma directory and exercise it, in a process of its own.

Run by :func:`memory.health.probe` as ``python memory/probe.py <chroma dir> <prefix>`` (by path, so it
imports nothing of ours): a corrupt HNSW segment can segfault the process that loads it, and random
bytes in ``chroma.sqlite3`` make Chroma's Rust core abort — neither can be caught where it happens. This
child takes that crash instead of the caller. For every collection of the prefix it counts the vectors,
reads a sample back with their embeddings, and searches for each sampled vector (a healthy graph finds a
stored vector as its own nearest neighbour). It prints one JSON object; any other outcome (a signal, a
non-zero exit, a timeout, unparsable output) means "rebuild".

    python memory/probe.py .selfevolve/chroma ep
"""

from __future__ import annotations

import json
import os
import random
import sys

SAMPLE = 8


def main(path: str, prefix: str) -> dict:
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    import chromadb
    import numpy as np
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
    report: dict[str, dict[str, int]] = {}
    for col in client.list_collections():
        if not col.name.startswith(f"{prefix}-"):
            continue
        col = client.get_collection(col.name, embedding_function=None)
        count = int(col.count())
        rng = random.Random(count)
        got = col.get(offset=rng.randrange(max(count - SAMPLE, 0) + 1), limit=SAMPLE, include=["embeddings"])
        hits = 0
        if got["ids"]:
            vectors = np.asarray(got["embeddings"], dtype=np.float32)
            found = col.query(query_embeddings=vectors, n_results=min(3, count), include=["distances"])
            for own, ids, dists in zip(got["ids"], found["ids"], found["distances"], strict=True):
                hits += bool(ids) and (ids[0] == own or float(dists[0]) < 1e-4)
        report[col.name] = {"count": count, "sampled": len(got["ids"]), "self_hits": hits}
    return report


if __name__ == "__main__":
    print(json.dumps({"collections": main(sys.argv[1], sys.argv[2])}))
