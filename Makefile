# `make test` and `make sweep` bootstrap everything they need into .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: .venv test sweep sweep-quick seeds bench clean

.venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# Lint and format checks first (ruff.toml), then the suite; pytest exits 5 when it collected nothing:
# treat that as a failure with a clear message.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

sweep: $(STAMP)
	$(BIN)/mecsim sweep paper
	$(BIN)/mecsim plot paper

# the default point over 16 seeds: run-to-run spread and where the published runs fall (3.5 minutes on 2 cores)
seeds: $(STAMP)
	$(BIN)/mecsim sweep seeds
	$(BIN)/mecsim plot seeds

sweep-quick: $(STAMP)
	$(BIN)/mecsim sweep quick
	$(BIN)/mecsim plot quick

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
