# synthdb developer entry points. Each target creates .venv when missing and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The embedded face generator (dcgan-digiface): synthdb reads its weights file by location and never imports
# the package, whose declared dependencies (wandb, ...) it does not need.
FACE_GENERATOR := gan-face-generate==1.1.1

# Tests use the local PostgreSQL server when it answers (CI sets SYNTHDB_TEST_POSTGRES_URL explicitly).
PG_DEFAULT := postgresql://postgres@127.0.0.1:5432/test
export SYNTHDB_TEST_POSTGRES_URL ?= $(shell pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && echo $(PG_DEFAULT))

.PHONY: demo test stress bench bench-gpu lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps $(FACE_GENERATOR)
	touch $(STAMP)

demo: $(STAMP)
	rm -rf demo-workspace
	$(BIN)/synthdb demo demo-workspace --photos tests/data/faces

test: $(STAMP)
	$(BIN)/ruff check synthdb cli migrations tests bench
	$(BIN)/python -m pytest -q

# Full-size stress cases (e.g. the 10,000-image resumable exports); `make test` runs them at a bounded size.
stress: $(STAMP)
	SYNTHDB_STRESS=1 SYNTHDB_STRESS_REPORT=$${SYNTHDB_STRESS_REPORT:-stress-report.json} $(BIN)/python -m pytest -q tests/stress tests/export/test_resume.py tests/generate/test_acceptance.py tests/test_fuzz_*.py tests/test_hostile_*.py tests/*/test_hostile_*.py tests/analysis/test_sql_guard.py

bench: $(STAMP)
	@for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

# Every bench/*_gpu.py in one run under a time budget, for a machine lent with a GPU.
bench-gpu: $(STAMP)
	bench/run_gpu.sh

lint: $(STAMP)
	$(BIN)/ruff check synthdb cli migrations tests bench
	$(BIN)/ruff format --check synthdb cli migrations tests bench

clean:
	rm -rf $(VENV) demo-workspace build dist *.egg-info .pytest_cache .ruff_cache
