# How to work on regprune. `make help` lists the targets.
PYTHON ?= python3

.PHONY: help install test-fast test lint typecheck format bench demo image image-debian

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

install:  ## editable install with the test and dask extras (pip >= 24 resolves it quickly)
	$(PYTHON) -m pip install -U pip
	$(PYTHON) -m pip install -e ".[test,dask]"

test-fast:  ## the tests that start no service: no registry, moto, emulator, real API or Prefect server
	$(PYTHON) -m pytest -q -m "not slow"

test:  ## every test, the end-to-end ones too (what CI runs; see .ci/run for the services)
	$(PYTHON) -m pytest -q

lint:  ## ruff (lint + format check) and sqlfluff over sql/
	ruff check .
	ruff format --check .
	sqlfluff lint sql/

typecheck:  ## mypy over the package as installed (regprune, regprune.flows, regprune.tasks)
	.ci/typecheck

format:  ## apply ruff's formatting and safe fixes
	ruff format .
	ruff check --fix .

bench:  ## the benchmarks at 100k blobs on a folder (bench/README.md has the other sections)
	$(PYTHON) bench/run --sections fs,tables --sizes 100k --repeat 3

demo:  ## the demo: a generated registry with every kind of drift, pruned and checked
	regprune demo

# The image of the Kubernetes work pool (deployments/Containerfile, docs/container.md). PODMAN
# may carry global options, e.g. PODMAN="podman --runtime runc --cgroup-manager=cgroupfs", and
# BUILD_OPTS the build's, e.g. a certificate bundle to mount for pip.
IMAGE ?= regprune:latest
PODMAN ?= podman
BUILD_OPTS ?=

image:  ## build the image from python:3.11-slim: podman build -f deployments/Containerfile -t regprune .
	$(PODMAN) build $(BUILD_OPTS) -f deployments/Containerfile -t $(IMAGE) .

image-debian:  ## the same on a Python base made from Debian's packages (deployments/debian-base)
	$(PODMAN) build $(BUILD_OPTS) --build-arg BASE="$$(deployments/debian-base)" \
	  -f deployments/Containerfile -t $(IMAGE) .
