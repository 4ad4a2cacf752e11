# Two commands set up everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8501

.PHONY: run test test-repeat install browser bench clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when requirements.txt changes.
$(STAMP): requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m streamlit run dashboard.py --server.address $(HOST) --server.port $(PORT) --server.headless true

# The browser tests drive Debian's chromium (Playwright cannot download browsers here); install it when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: install browser
	$(PY) -m pytest -n 2 --timeout 600 -q

# Flakiness check before resolving anything that touches the suite: RUNS quiet runs, then LOADED_RUNS with one core
# kept busy by another process. Logs in test-artifacts/repeat/.
RUNS ?= 5
LOADED_RUNS ?= 3
test-repeat: install browser
	bash .ci/test-repeat $(RUNS) $(LOADED_RUNS)

bench: install
	$(PY) bench/train_throughput.py
	$(PY) bench/sweep_throughput.py
	$(PY) bench/store_scale.py
	$(PY) bench/dashboard_latency.py

clean-venv:
	rm -rf $(VENV)
