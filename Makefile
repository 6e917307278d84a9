# Quick start: `make demo` and `make test`. Both install what they need into ./.venv
# (or into the active virtual environment when VIRTUAL_ENV is set).
PYTHON ?= python3
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := .venv
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ss4d-installed

.PHONY: install test demo lint bench vectors clean chromium

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,data]"
	$(PY) -m pip install -q --no-deps bpy==5.0.1 || echo "bpy (Blender as a module) not installed: Blender tests will skip"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q tests

# Optional: Debian's headless Chromium for tests/test_viewer_browser.py (viewer.html opened from file://).
# Best effort: without it (no apt, no root, no network) that test skips and `make test` still passes.
chromium:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; \
	elif ! command -v apt-get >/dev/null 2>&1; then echo "no apt-get: browser test of viewer.html will skip"; \
	else SUDO=; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium \
	    >/dev/null; } || echo "chromium not installed: browser test of viewer.html will skip"; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .

vectors: $(STAMP)
	$(PY) ../shared/tools/check_vectors.py ../shared/vectors
	$(PY) ../shared/tools/check_manifests.py ../shared/vectors/state_dict_manifests.json

bench: $(STAMP)
	$(PY) benchmarks/sparse_ops.py

demo: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/ss4d generate examples/rose -o outputs/demo --overwrite --render-size 128

clean:
	rm -rf outputs .pytest_cache
