# make run   - set up (once) and serve on http://127.0.0.1:8000
# make test  - set up (once) and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test clean

setup: $(VENV)/.installed

# Re-installs only when a requirements file changes; pip resolves nothing when all is pinned and present.
$(VENV)/.installed: requirements.txt requirements-test.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

run: setup
	exec $(BIN)/gunicorn -c gunicorn.conf.py

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache

# make load   - 64 clients x 60 s, then 10,000 requests with RSS per worker (about 10 min; loopback only)
# make chaos  - SIGKILL/SIGHUP/SIGTERM under load, slow clients (about 3 min; loopback only)
.PHONY: load chaos
load: setup
	$(BIN)/python -m scripts.load $(ARGS)

chaos: setup
	$(BIN)/python -m scripts.chaos $(ARGS)
