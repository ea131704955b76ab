# Two commands for a newcomer: `make demo` (the main job on embedded data) and `make test` (the suite).
# Each creates .venv and installs the project into it first; nothing else is needed on the machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/vislab demo

test: $(STAMP)
	WANDB_MODE=offline $(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check train models data tests benchmarks
	$(BIN)/mypy --config-file pyproject.toml -p vislab
	$(BIN)/hadolint Dockerfile

clean:
	rm -rf $(VENV) runs .pytest_cache
