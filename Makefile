# Every target sets up what it needs itself: a fresh clone runs `make run` or `make test` directly.
# The project pins Python 3.11 (pyproject.toml); prefer that interpreter when the machine has several.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
VENV := .venv
# The stamp, not the directory, is the target: a venv whose lock or pyproject changed is re-synced.
# FuelSDK (a test's second MC client) goes in with --no-deps: it pins suds-jurko, which does not build
# on Python 3.11; requirements-fuelsdk.txt lists its real dependencies instead.
STAMP := $(VENV)/.installed

.PHONY: .venv run test bench lint clean

.venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock requirements-fuelsdk.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.lock
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -r requirements-fuelsdk.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# The embedded broker's jars are resolved by Maven on first use (stream_app.localkafka.ensure_jars).
run: $(STAMP)
	$(VENV)/bin/python -m stream_app dev

test: $(STAMP)
	scripts/ensure-system-deps
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python -m bench

# All three always run, so one report shows every problem; the target fails if any of them did.
lint: $(STAMP)
	@status=0; \
	$(VENV)/bin/ruff check . || status=1; \
	$(VENV)/bin/ruff format --check . || status=1; \
	$(VENV)/bin/mypy || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) .state .mypy_cache .ruff_cache .pytest_cache broker/lib broker/lib.tmp \
		registry/app registry/app.tmp registry/target
