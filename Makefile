# The two commands a new user needs: `make demo` and `make test`. Both set the machine up first.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test bootstrap lint image vendor-openapi fixtures bench real-model clean

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	@$(PY) -m sim.demo

test: bootstrap
	@$(VENV)/bin/pytest

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

image:
	@$(PY) -m sandbox.image ensure

vendor-openapi:
	$(PY) scripts/vendor_openapi.py

fixtures:
	$(PY) scripts/make_fixtures.py

bench: bootstrap
	@$(PY) -m bench.demo

# A real model for sim.realmodel: llama-server and Qwen2.5-Coder-1.5B in a cache outside the
# repository (CODEX_REAL_MODEL_CACHE). About 15 minutes on 2 cores the first time.
real-model:
	@bash scripts/real_model.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
