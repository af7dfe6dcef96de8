# The two commands of the README: `make run` (console on demo data, which starts its own
# worker when none is running) and `make test`; `make worker` runs a worker by itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-requirements

.PHONY: install run test bench sandbox worker

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m sync init-db --demo
	$(BIN)/streamlit run console.py

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m sync bench

worker: $(STAMP)
	$(BIN)/python -m sync worker
