# Two commands for a fresh clone: `make book` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The environment is rebuilt when the pins change.
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-test.txt pyproject.toml | sha256sum | cut -c1-12)

.PHONY: book test env test-env lint unit clean clean-book bundles

env: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	# torchattacks pins requests~=2.25.1, which breaks Jupyter: install it without its deps
	$(BIN)/pip install --disable-pip-version-check -q --no-deps -r requirements-test.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*; touch $@

book: env
	$(BIN)/jupyter-book build . --builder html -W
	@echo "book: open _build/html/index.html"

test-env: env
	@bash scripts/ensure_chromium.sh

# The book build executes every chapter from a clean kernel (errors and warnings fail it);
# pytest then runs the unit tests and the browser tests against the built pages.
test: test-env lint book
	$(BIN)/python -m pytest tests --doctest-modules vqdbook

lint: env
	$(BIN)/ruff check vqdbook tests scripts

unit: env
	$(BIN)/python -m pytest tests -m "not browser and not book" --doctest-modules vqdbook

bundles: env
	$(BIN)/vqdbook data bundle

clean-book:
	rm -rf _build

clean: clean-book
	rm -rf $(VENV)
