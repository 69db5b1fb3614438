# Two commands on a fresh clone (see README):  make demo   |   make test
VENV ?= .venv
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
RUNTIME_INPUTS := pyproject.toml requirements/constraints.txt scripts/bootstrap.sh

.PHONY: demo test install install-dev clean image

demo: $(STAMP)  ## Map land cover over the bundled Slovenia time series (offline)
	$(VENV)/bin/sitsflow demo

test: $(DEV_STAMP)  ## Lint, type-check and run the test suite
	scripts/test.sh

install: $(STAMP)  ## The runtime only: the venv, sitsflow, its compiled kernels

install-dev: $(DEV_STAMP)  ## The runtime, the dev tools and the test servers

# The runtime: what `make demo` needs, nothing more (no Debian package, no server).
$(STAMP): $(RUNTIME_INPUTS)
	VENV=$(VENV) scripts/bootstrap.sh

# The runtime plus the dev tools, the test servers' Debian packages, helm and kubectl. The script
# installs the runtime in the same pass and touches both stamps.
$(DEV_STAMP): $(RUNTIME_INPUTS) scripts/apt-packages.txt scripts/install-helm.sh
	VENV=$(VENV) scripts/bootstrap.sh --dev

# The container image, built here without a Docker engine (buildah, a debootstrapped Debian 12
# base, a wheelhouse from this venv; needs root, buildah and debootstrap). Elsewhere:
# docker build -f deploy/Dockerfile -t sitsflow:0.1.0 .   (docs/kubernetes.md)
image: $(STAMP)  ## Build the sitsflow image (localhost/sitsflow:dev) with buildah
	PYTHON=$(VENV)/bin/python deploy/image.sh

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
