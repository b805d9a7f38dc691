"""A structural check of Chroma's persisted HNSW files, in numpy: what the native loader trusts blindly.

Chroma's hnswlib (``persist_on_write``) keeps four files per vector segment: ``header.bin`` (100 bytes:
version, offsets, ``max_elements``, ``cur_element_count``, ``maxM``/``maxM0``, entry point, max level),
``data_level0.bin`` (one record per element: level-0 neighbour count and ids, the vector, the label),
``length.bin`` (one float per element) and ``link_lists.bin`` (per element: a byte size, then the upper
levels' neighbour lists). The loader reads them with no bounds checks: a truncated data file leaves
uninitialised memory, a neighbour id past the end or on a level its target does not reach is a wild
pointer — a segfault on some later search, not at load (the child probe's few queries can miss it).
This reads the same bytes without following any pointer, so it cannot crash; it runs before the probe
whenever a directory was not sealed at a clean close. An unknown persistence version is not judged
(``None``), the probe still runs.

    python -c "from memory.hnsw_check import check_dir; print(check_dir('.selfevolve/chroma'))"
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

FILES = ("header.bin", "data_level0.bin", "length.bin", "link_lists.bin")
HEADER = struct.Struct("<i6QiI3QdQ")  # version, offsetLevel0 … offsetData, maxlevel, entry point, maxM, maxM0, M, mult, efC
VERSION = 1


def _header(path: Path) -> tuple[dict[str, float], str | None]:
    raw = path.read_bytes()
    if len(raw) != HEADER.size:
        return {}, f"{path.name} is {len(raw)} bytes, not {HEADER.size}"
    names = ("version", "offset0", "max", "count", "per_element", "label_offset", "data_offset", "maxlevel",
             "entry", "maxM", "maxM0", "M", "mult", "ef")
    h = dict(zip(names, HEADER.unpack(raw), strict=True))
    if h["version"] != VERSION:
        return h, None
    dim4 = h["label_offset"] - h["data_offset"]
    sane = (h["offset0"] == 0 and 0 <= h["count"] <= h["max"] < 2**32 and h["maxM0"] < 2**16
            and h["data_offset"] == 4 + 4 * h["maxM0"] and dim4 > 0 and dim4 % 4 == 0
            and h["per_element"] == h["label_offset"] + 8 and -1 <= h["maxlevel"] < 64 and 0 < h["maxM"] < 2**16
            and (h["count"] == 0 or h["entry"] < h["count"]) and np.isfinite(h["mult"]))
    return h, None if sane else f"{path.name} holds impossible values"


def _level0(data: np.ndarray, h: dict[str, float]) -> str | None:
    n, m0 = int(h["count"]), int(h["maxM0"])
    counts = data[:n, 0:2].copy().view("<u2")[:, 0]
    if (counts > m0).any():
        return "data_level0.bin: a level-0 neighbour count is larger than the graph allows"
    links = data[:n, 4 : 4 + 4 * m0].copy().view("<u4")
    used = np.arange(m0)[None, :] < counts[:, None]
    if (links[used] >= n).any():
        return "data_level0.bin: a level-0 neighbour id points past the last element"
    vectors = data[:n, int(h["data_offset"]) : int(h["label_offset"])].copy().view("<f4")
    if not np.isfinite(vectors).all():
        return "data_level0.bin: a stored vector is not finite"
    return None


def _upper_levels(raw: bytes, h: dict[str, float]) -> str | None:
    n, maxm, per = int(h["count"]), int(h["maxM"]), 4 + 4 * int(h["maxM"])
    levels = np.zeros(n, dtype=np.int64)
    blocks: list[tuple[int, int]] = []  # (byte offset of a level's list, its level)
    pos = 0
    for i in range(n):
        if pos + 4 > len(raw):
            return "link_lists.bin ends before the last element"
        (size,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if size % per or size // per > max(int(h["maxlevel"]), 0) or pos + size > len(raw):
            return "link_lists.bin: an element's link list has an impossible size"
        levels[i] = size // per
        blocks.extend((pos + (lv - 1) * per, lv) for lv in range(1, levels[i] + 1))
        pos += size
    if pos != len(raw):
        return f"link_lists.bin is {len(raw)} bytes, its lists take {pos}"
    if n and levels[int(h["entry"])] != int(h["maxlevel"]):
        return "header.bin: the entry point is not on the top level"
    for offset, lv in blocks:
        count = struct.unpack_from("<H", raw, offset)[0]
        ids = np.frombuffer(raw, dtype="<u4", count=maxm, offset=offset + 4)[:count]
        if count > maxm or (ids >= n).any() or (levels[ids[ids < n]] < lv).any():
            return "link_lists.bin: an upper-level neighbour id points outside the graph"
    return None


def check_segment(folder: Path) -> str | None:
    """None if the segment's files are consistent (or of a version not judged here), else what is wrong."""
    present = [f for f in FILES if (folder / f).is_file()]
    if not present:
        return None  # a segment Chroma has not persisted yet
    missing = [f for f in FILES if f not in present]
    if missing:
        return f"{folder.name}/{missing[0]} is missing"
    h, problem = _header(folder / "header.bin")
    if problem or h.get("version") != VERSION:
        return f"{folder.name}/{problem}" if problem else None
    per, n = int(h["per_element"]), int(h["count"])  # records past cur_element_count are never read
    sizes = {f: (folder / f).stat().st_size for f in FILES}
    if sizes["data_level0.bin"] < n * per:
        return f"{folder.name}/data_level0.bin is {sizes['data_level0.bin']} bytes, its {n} elements need {n * per}"
    if sizes["length.bin"] < 4 * n:
        return f"{folder.name}/length.bin is {sizes['length.bin']} bytes, its {n} elements need {4 * n}"
    data = np.fromfile(folder / "data_level0.bin", dtype=np.uint8, count=n * per).reshape(n, per)
    lengths = np.fromfile(folder / "length.bin", dtype="<f4", count=n)
    problem = (_level0(data, h) or _upper_levels((folder / "link_lists.bin").read_bytes(), h)
               or (None if np.isfinite(lengths).all() else "length.bin: a stored length is not finite"))
    return f"{folder.name}/{problem}" if problem else None


def check_dir(root: str | Path, only: set[str] | None = None) -> str | None:
    """Check the HNSW segment folders of an embedded Chroma directory (``only`` these names, if given);
    the first problem found, or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (only is None or p.name in only)):
        problem = check_segment(folder)
        if problem:
            return problem
    return None
