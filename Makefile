# `make demo` and `make test` work from a clean clone: they create .venv, install
# convertkit with every framework (pinned by constraints.txt), then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test test-sophgo test-deps lint clean

install: $(STAMP)

# mindcv (real MindSpore models for tests and benchmarks) comes without its own
# requirements, which pin old numpy and mindspore releases.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[all,dev]"
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps mindcv==0.3.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/convertkit convert examples/tiny_cnn.py:build -i x:batchx3x32x32 -t cpu \
		-o build/demo --force

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2 -m "not sophgo" $(PYTEST_ARGS)

# The Sophgo tests need its ~6.5 GB toolchain environment (installed on first run, ~4 min).
test-sophgo: $(STAMP)
	$(BIN)/pytest -m sophgo tests/integration/platforms/test_sophgo.py \
		tests/integration/platforms/test_sophgo_mixed.py

# Optional, best effort, never fails: headless Chromium from Debian's packages for the
# test that opens report.html (without it that test is skipped and says why).
test-deps:
	-@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		(command -v apt-get >/dev/null 2>&1 && apt-get install -y --no-install-recommends \
		chromium) || echo "chromium not installed: the HTML report test will be skipped"

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build .pytest_cache
