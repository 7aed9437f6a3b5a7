# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export MLFLOW_DISABLE_TELEMETRY := true
export ORT_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

.PHONY: install demo test lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch first, pinned to the local CPU wheel; then the package, constrained to that torch.
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev,spark,serve,tune,jobs,onnx,transfer,audio]"
	@# Spark needs a JRE: install a headless one when we can, else say what is missing (spark tests skip).
	@command -v java >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
		&& (apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null); } \
		|| echo "note: no Java found and none could be installed; Spark features need Java 17+ (JAVA_HOME)"
	@# Spoken-digit examples synthesise speech offline with espeak-ng: install it when we can (its tests skip if not).
	@command -v espeak-ng >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
		&& (apt-get install -y -qq espeak-ng >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null)); } \
		|| echo "note: espeak-ng could not be installed; the spoken-digit examples and their tests are skipped"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lakenet demo --dir demo_run

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

format: $(STAMP)
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

bench: $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[bench]"
	$(BIN)/python -m bench.train_overhead
	$(BIN)/python -m bench.train_from_table
	$(BIN)/python -m bench.ddp_local
	$(BIN)/python -m bench.score_throughput
	$(BIN)/python -m bench.score_vs_peers
	$(BIN)/python -m bench.serve_latency
	$(BIN)/python -m bench.serve_batching
	$(BIN)/python -m bench.tune_asha
	$(BIN)/python -m bench.real_tables
	$(BIN)/python -m bench.update_vs_retrain
	$(BIN)/python -m bench.incremental_score
	$(BIN)/python -m bench.explain_cost
	$(BIN)/python -m bench.scale

clean:
	rm -rf $(VENV) demo_run mlflow.db optuna.db mlartifacts .lakenet .pytest_cache .mypy_cache .ruff_cache
