# make run   - install what is missing, then run diskvault on embedded defaults
# make test  - install what is missing, then lint, type-check and run every test
# make fuzz  - schemathesis against a real server as each role, longer than make test's run
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: run test lint deps system-deps clean bench fuzz settings-doc

deps: system-deps $(STAMP)
	@./scripts/link-debian-bindings $(VENV) >/dev/null

system-deps:
	@./scripts/install-system-deps

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

run: deps
	$(BIN)/diskvault serve

settings-doc: deps  # regenerate docs/settings.md from diskvault.config.Settings
	$(BIN)/python -m diskvault.settings_doc --write

lint: deps
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src/

test: lint
	@./scripts/check-services
	$(BIN)/pytest

# FUZZ_EXAMPLES=200 FUZZ_SEED=7 make fuzz
fuzz: deps
	DV_FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-100} DV_FUZZ_SEED=$${FUZZ_SEED:-$$RANDOM} \
		$(BIN)/pytest tests/api/test_fuzz.py -p no:cacheprovider --timeout=0 -v

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
