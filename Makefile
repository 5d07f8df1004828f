# The two commands a newcomer runs: `make run` and `make test`.
# Everything they need is installed here, into .venv, from requirements.lock.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BUF    := $(VENV)/bin/buf
STAMP  := $(VENV)/.installed

.PHONY: run test test-db protos lint breaking migrate screenshots clean

$(STAMP): requirements.lock requirements-interop.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@echo "installing the pinned dependencies into $(VENV) (about a minute, once; later runs reuse it)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --ignore-requires-python -r requirements-interop.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

## run: the suite — embedded Postgres (unless DATABASE_URL), migrations, four services, the gateway.
##   Checks its ports first; Ctrl-C (or SIGTERM to make) stops everything it started.
run: $(STAMP)
	$(PY) -m services

## test: the whole test suite (embedded Postgres unless DATABASE_URL is set)
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## test-db: only the database tests, e.g. against another server:
##   make test-db DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test
test-db: $(STAMP)
	$(PY) -m pytest -m db $(PYTEST_ARGS)

## protos: regenerate gen/ from protos/
protos: $(STAMP)
	$(PY) tools/gen_protos.py

## lint: the contracts (buf lint, buf format) and the Python (ruff, mypy: pyproject.toml says how)
## (no ruff format: the code base is not in its style, and a mass reformat buries history)
lint: $(STAMP)
	$(BUF) lint
	$(BUF) format -d --exit-code --exclude-path third_party/protos/opentelemetry  # vendored unchanged
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## breaking: the contracts against main
breaking: $(STAMP)
	$(BUF) breaking --against '.git#branch=main'

## migrate: apply migrations to DATABASE_URL (or the embedded Postgres)
migrate: $(STAMP)
	$(PY) -m aos_runtime.migrate upgrade

## screenshots: the console's pages as the browser tests see them (demo data), into docs/console/
##   (needs chromium: apt-get install -y chromium)
screenshots: $(STAMP)
	CONSOLE_SCREENSHOTS=docs/console $(PY) -m pytest tests/gateway/test_console_browser.py -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .aos .pytest_cache .mypy_cache .ruff_cache
