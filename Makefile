# SafetyPairs: `make demo` runs the whole graph on the offline demo pool, `make test` runs the tests,
# `make dev` opens the Dagster UI on http://127.0.0.1:3000.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# CPU wheel of PyTorch by default; on a GPU machine run `make setup-gpu` (below) for the CUDA build.
CONSTRAINTS ?= constraints-cpu.txt
# Where pip finds the CPU wheel (torch 2.13.0+cpu) when its own configuration does not offer it: PyPI's
# torch 2.13.0 for Linux is the CUDA build. e.g. make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
EXTRAS ?= dev,ray,s3,guards
# The instance config (dagster.yaml) lives at the repository root.
export DAGSTER_HOME := $(CURDIR)

.PHONY: setup setup-gpu demo test test-all dev bench clean-data

$(STAMP): pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -e '.[$(EXTRAS)]'
	touch $(STAMP)

# `source .venv/bin/activate` then lets the dagster CLI find the code location and the instance
# (`dagster asset materialize --select ... --partition ...` without -m); added once.
setup: $(STAMP)
	@$(BIN)/python -m sp_assets.backends.common.model_store install
	@grep -q DAGSTER_MODULE_NAME $(BIN)/activate || printf '%s\n' '' \
	  '# SafetyPairs (make setup): the dagster CLI finds the code location and the instance from here.' \
	  'export DAGSTER_MODULE_NAME="$${DAGSTER_MODULE_NAME:-sp_assets.definitions}"' \
	  'export DAGSTER_HOME="$${DAGSTER_HOME:-$(CURDIR)}"' >> $(BIN)/activate

# A GPU machine: PyPI's CUDA build of torch 2.13 and the torchvision built for it (the `gpu` extra; the
# LLaVA-OneVision and Qwen-VL processors need it). Later `make test` / `make demo` reuse this install.
# A .venv that holds the CPU torch is refused: pip would keep it (2.13.0+cpu satisfies torch==2.13.0)
# and add a CUDA torchvision that cannot import beside it.
setup-gpu:
	@if $(BIN)/python -c "import importlib.metadata as m; exit('+cpu' not in m.version('torch'))" 2>/dev/null; then \
	  echo "$(VENV) holds the CPU build of torch, which pip would keep: rm -rf $(VENV), then make setup-gpu." >&2; \
	  exit 1; fi
	rm -f $(STAMP)
	$(MAKE) setup CONSTRAINTS=constraints-gpu.txt EXTRAS=dev,ray,s3,guards,gpu

demo: setup
	$(BIN)/python -m sp_assets.demo

# Two tiers (tests/conftest.py registers the marker): `make test` after every change, without the tests
# marked `full` (real Dagster CLI processes, kill -9, Ray, an S3 server, a browser, the held-out judge
# figures); `make test-all` runs everything, as CI does (PYTEST_ARGS=--durations=25 there).
PYTEST_ARGS ?=
test: setup
	$(BIN)/python -m pytest -m "not full" $(PYTEST_ARGS)

test-all: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Speed and memory figures, one `name: value` line each (minutes: the whole demo several times).
bench: setup
	@for script in benchmarks/bench_*.py; do echo "# $$script"; $(BIN)/python $$script || exit 1; done

dev: setup
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000

clean-data:
	rm -rf data .dagster
