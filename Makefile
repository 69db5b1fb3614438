# Two commands on a fresh clone (see README):  make demo   |   make test
VENV ?= .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

demo: $(STAMP)  ## Map land cover over the bundled Slovenia time series (offline)
	$(VENV)/bin/sitsflow demo

test: $(STAMP)  ## Lint, type-check and run the test suite
	scripts/test.sh

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt scripts/bootstrap.sh scripts/apt-packages.txt
	scripts/bootstrap.sh

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
