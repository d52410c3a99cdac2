# image-mapper developer targets. `make test` and `make e2e` are what CI runs (.ci/run).
PYTHON ?= python3
# The image name deploy/ refers to. Nobody publishes it: build and push your own
# (docs/install.md), e.g. make image push IMG=registry.example.com/image-mapper:v0.1.0
IMG ?= ghcr.io/image-mapper/image-mapper:v0.1.0
# Empty: the Dockerfile's default, the release base ghcr.io/flant/shell-operator:v1.20.3.
# The e2e cluster and `make demo` use the stand-in made by `make standin-base`.
BASE_IMAGE ?=
CONTAINER_TOOL ?= $(shell for t in buildah podman docker; do command -v $$t >/dev/null 2>&1 && { echo $$t; break; }; done)
IMAGE_BUILD_FLAGS ?=
PUSH_FLAGS ?=
export PYTHONPATH := $(CURDIR)/lib

.PHONY: dev test lint unit e2e e2e-packages e2e-binaries standin-base demo demo-down demo-control-plane bench bench-long image push bundle clean

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

e2e-packages:  ## the Debian packages of the one-node cluster (containerd, runc, CNI, registry, buildah, ...)
	bash tests/e2e/install-packages.sh

e2e-binaries: e2e-packages  ## build etcd, kube-apiserver, shell-operator, kubelet & co. into ~/.cache/image-mapper-e2e
	bash tests/e2e/build-binaries.sh

standin-base: e2e-binaries  ## the local stand-in for the image's base (docs/install.md)
	bash tests/e2e/build-standin-base.sh

e2e: e2e-binaries  ## the whole system on a real kube-apiserver + shell-operator
	$(PYTHON) -m pytest -q -m e2e tests/e2e

demo: standin-base  ## one-node cluster, image-mapper from its image, sample rules + app Running (KEEP=1 keeps it)
	$(PYTHON) tests/e2e/realdemo.py

demo-down:  ## take down a cluster left by `make demo KEEP=1`, by PID
	$(PYTHON) tests/e2e/realdemo.py --stop

demo-control-plane: e2e-binaries  ## the older demo: control plane only, admission before -> after
	$(PYTHON) tests/e2e/demo.py

bench:  ## benchmarks (ratios from one run); writes docs/performance.md
	$(PYTHON) tests/bench/run.py

bench-long: e2e-binaries  ## bench plus the end-to-end figures: about 6 min, bounded; uses 127.0.0.1:443 like make e2e
	$(PYTHON) tests/bench/run.py --e2e

bundle:  ## render deploy/bundle.yaml from the kustomize base
	{ printf '%s\n' '# Generated file, do not edit. Source: deploy/ (kustomize).' \
	  '# Regenerate with `make bundle`, which runs: kubectl kustomize deploy/' \
	  '# Install with: kubectl apply -f deploy/bundle.yaml'; \
	  kubectl kustomize deploy/; } > deploy/bundle.yaml.tmp
	mv deploy/bundle.yaml.tmp deploy/bundle.yaml

image:  ## build the runtime image IMG from the Dockerfile (buildah, podman or docker: CONTAINER_TOOL=)
	$(CONTAINER_TOOL) $(if $(filter buildah,$(notdir $(CONTAINER_TOOL))),bud --layers,build) \
	  $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) $(IMAGE_BUILD_FLAGS) -t $(IMG) .

push:  ## push IMG to its registry (PUSH_FLAGS=--tls-verify=false for a plain-HTTP one)
	$(CONTAINER_TOOL) push $(PUSH_FLAGS) $(IMG)

clean:
	rm -rf .pytest_cache .hypothesis .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
