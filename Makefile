# acalign: two commands do everything on a fresh machine.
#   make demo   set up, build the embedded corpus from real recordings, train, evaluate, report
#   make test   set up and run the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_DIR ?= runs/demo
# The CPU build of torch; installed first so the package's torch range pulls nothing more.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup test demo bench lint browser clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# Headless Chromium for the web-page tests (Debian's package; needs root or an existing install).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing and this user cannot apt-get install it: browser tests will be skipped"; fi; }

test: $(STAMP) browser
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(VENV)/bin/acalign demo --out $(DEMO_DIR)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
