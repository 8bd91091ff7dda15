# make run   - set up (once) and serve on http://127.0.0.1:8000
# make test  - set up (once) and run the test suite
# make bench - set up (once) and benchmark the service on this machine (prints a table)
# make lint  - ruff and mypy over the whole project
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test bench lint clean

setup: $(VENV)/.installed

# Re-installs only when a requirements file changes; pip resolves nothing when all is pinned and present.
$(VENV)/.installed: requirements.txt requirements-test.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

# newman, for the tests only (it runs the Postman collection); without npm that test is skipped.
node_modules/.installed: package.json package-lock.json
	if command -v npm >/dev/null; then npm ci --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: the Postman collection test will be skipped"; fi

run: setup
	@exec $(BIN)/gunicorn -c gunicorn.conf.py  # @: stdout carries only the JSON request log

test: setup node_modules/.installed
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy .

clean:
	rm -rf $(VENV) .pytest_cache node_modules

bench: setup
	$(BIN)/python bench/run.py

# make load   - 64 clients x 60 s, then 10,000 requests with RSS per worker (about 10 min; loopback only)
# make chaos  - SIGKILL/SIGHUP/SIGTERM under load, slow clients (about 2 min; loopback only)
.PHONY: load chaos
load: setup
	$(BIN)/python -m scripts.load $(ARGS)

chaos: setup
	$(BIN)/python -m scripts.chaos $(ARGS)
