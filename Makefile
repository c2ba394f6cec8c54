# make replay: create/refresh .venv and run the main job on the bundled real trace.
# make test:   the whole suite (JIT on), then the JIT-off coverage pass on small traces.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TRACE   ?= traces/mixed_small
OUT     ?= results/mixed_small.parquet
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: replay test test-fast lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

replay: $(STAMP)
	$(BIN)/ptebench ingest $(TRACE) -o $(OUT)
	$(BIN)/ptebench replay $(OUT) --variant none --mode faithful --json results/mixed_small.json \
		--splits results/mixed_small.splits.parquet

test: $(STAMP)
	$(BIN)/ruff check ptebench tests
	$(BIN)/python -m pytest -q -p no:cacheprovider
	$(BIN)/python -m pytest -q -p no:cacheprovider --nbmake notebooks/analysis.ipynb
	NUMBA_DISABLE_JIT=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow" \
		--cov=ptebench --cov-report=term:skip-covered

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -x -m "not slow"

clean:
	rm -rf $(VENV) .numba_cache .pytest_cache results/*.parquet
