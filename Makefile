# The two commands of the README. Both set up .venv on first use (see scripts/setup.sh).
VENV := .venv
STAMP := $(VENV)/.vlnkit-installed

.PHONY: demo test setup bench

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vlnkit demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest

bench: $(STAMP)
	$(VENV)/bin/vlnkit bench all
