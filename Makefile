# The README's two commands: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Attribution runs for every event, so make compiles it with mypyc; the .py stays the source
# (rebuilt whenever it changes) and runs as plain Python where the extension is missing.
NATIVE := pipelines/attribution$(shell $(PYTHON) -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")

.PHONY: demo test lint install native clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) $(NATIVE)

# Without a C compiler the build fails: the stale extension goes and the source runs instead.
$(NATIVE): pipelines/attribution.py $(STAMP)
	$(BIN)/mypyc pipelines/attribution.py || { rm -f pipelines/attribution*.so; \
	  echo "mypyc failed: pipelines/attribution.py runs as plain Python"; exit 0; }
	test ! -e $@ || touch $@  # setuptools leaves an unchanged file alone

native: $(NATIVE)

demo: $(STAMP) $(NATIVE)
	$(BIN)/xpstream demo

# The console's browser tests drive Debian's Chromium through its chromedriver.
browser:
	command -v chromedriver >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

test: $(STAMP) $(NATIVE) browser
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build pipelines/*.so
