# image-mapper developer targets. `make test` and `make e2e` are what CI runs (.ci/run).
PYTHON ?= python3
IMG ?= ghcr.io/image-mapper/image-mapper:v0.1.0
CONTAINER_TOOL ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
export PYTHONPATH := $(CURDIR)/lib

.PHONY: dev test lint unit e2e e2e-binaries demo bench bench-long image bundle clean

dev:  ## install the pinned test and lint tools
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

# A missing tool stops the target with how to get it, instead of a bare "No module named".
need = @$(PYTHON) -c 'import $(1)' 2>/dev/null || { echo "error: Python module '$(1)' is missing: run 'make dev' first (pip install -r requirements-dev.txt)" >&2; exit 1; }

lint:  ## ruff, and mypy on lib/ (configuration: pyproject.toml)
	$(call need,ruff)
	$(call need,mypy)
	$(PYTHON) -m ruff check lib hooks tests
	$(PYTHON) -m mypy

unit:
	$(call need,pytest)
	$(PYTHON) -m pytest -q -m "not e2e" --ignore=tests/e2e tests

test: lint unit  ## lint + unit, property, harness and bundle tests

e2e-binaries:  ## build etcd, kube-apiserver and shell-operator into ~/.cache/image-mapper-e2e
	bash tests/e2e/build-binaries.sh

e2e: e2e-binaries  ## the whole system on a real kube-apiserver + shell-operator
	$(PYTHON) -m pytest -q -m e2e tests/e2e

demo: e2e-binaries  ## local control plane, bundle, sample rules, before -> after (KEEP=1 keeps it)
	$(PYTHON) tests/e2e/demo.py

bench:  ## benchmarks (ratios from one run); writes docs/performance.md
	$(PYTHON) tests/bench/run.py

bench-long: e2e-binaries  ## bench plus the end-to-end latency figures
	$(PYTHON) tests/bench/run.py --e2e

bundle:  ## render deploy/bundle.yaml from the kustomize base
	{ printf '%s\n' '# Generated file, do not edit. Source: deploy/ (kustomize).' \
	  '# Regenerate with `make bundle`, which runs: kubectl kustomize deploy/' \
	  '# Install with: kubectl apply -f deploy/bundle.yaml'; \
	  kubectl kustomize deploy/; } > deploy/bundle.yaml.tmp
	mv deploy/bundle.yaml.tmp deploy/bundle.yaml

image:  ## build the runtime image (CONTAINER_TOOL=docker or podman)
	$(CONTAINER_TOOL) build -t $(IMG) .

clean:
	rm -rf .pytest_cache .hypothesis .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
