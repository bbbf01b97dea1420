# The few commands people type. `make demo` and `make test` install into .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	# hydra-optuna-sweeper 1.3.0 declares optuna<3; we pin optuna 4.9 and add the plugin without its deps.
	$(PY) -m pip install --no-deps hydra-optuna-sweeper==1.3.0
	# open-flamingo 2.0.1 (tests compare against it) pins torch==2.0.1; it runs on ours, so no deps either.
	$(PY) -m pip install --no-deps open-flamingo==2.0.1
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/metamanip-pipeline experiment=demo

# The SLURM tests need a one-node cluster: as root with apt reachable, slurm/ci-prepare.sh installs its packages
# (idempotent; elsewhere it only reports), and the tests start it. Skipped tests are listed at the end.
test: $(STAMP)
	bash slurm/ci-prepare.sh
	$(PY) -m pytest -q tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

bench: $(STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf outputs logs .pytest_cache
