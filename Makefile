# deelit — the commands a newcomer needs:
#   make demo    set up the host, build what is missing, and image a virtual laptop over PXE
#                beside a stand-in router, with progress here and on the station page
#   make test    set up the host, then run lint and the whole test suite
#   make image   set up the host, then build the default image (PROFILE=pupil)
PROFILE ?= pupil
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
DEELIT  := $(VENV)/bin/deelit
PYTEST_ARGS ?=
# Which tests: the pytest marker expression (pyproject.toml's default leaves out heavy_vm);
# `make test MARKERS=` runs everything, `make test MARKERS=heavy_vm` only the long VM tests.
MARKERS ?= not heavy_vm
DEMO_ARGS ?=
# `make partner-check` (ci-examples/): sign with SIGNING_KEY, accept only SIGNER's signature,
# boot the disk image under FIRMWARE; reports in out/verify-PROFILE.xml and .json
SIGNING_KEY ?=
SIGNER ?=
FIRMWARE ?= bios

.PHONY: setup host-packages test-packages python lock demo image partner-check test test-quick \
	lint clean

setup: host-packages python

host-packages:
	./scripts/install-host-packages host-packages.txt

test-packages:
	./scripts/install-host-packages test-packages.txt

python: $(VENV)/.installed

# Exactly the pinned, hash-checked set of requirements.lock, then deelit itself without
# resolving anything: two fresh machines install the same code. `make lock` refreshes it.
$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# `make lock` keeps every pin pyproject.toml still allows; `make lock LOCK_ARGS=--upgrade`
# moves each to the newest release it allows.
LOCKTOOL := .cache/locktool
LOCK_ARGS ?=
lock:
	test -x $(LOCKTOOL)/bin/pip-compile || { $(PYTHON) -m venv $(LOCKTOOL) && \
		$(LOCKTOOL)/bin/pip install --quiet pip-tools; }
	$(LOCKTOOL)/bin/pip-compile --quiet --generate-hashes --extra test --allow-unsafe \
		--strip-extras --build-deps-for wheel --build-deps-for editable \
		--no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
		--output-file requirements.lock $(LOCK_ARGS) pyproject.toml

demo: setup
	$(DEELIT) demo $(DEMO_ARGS)

image: setup
	$(DEELIT) build $(PROFILE)

# What an IT partner's CI runs (ci-examples/): build PROFILE (signed when SIGNING_KEY is set),
# then verify its folder as a café gets it, with a JUnit and a JSON report beside it.
partner-check: setup
	$(DEELIT) build $(PROFILE) $(if $(SIGNING_KEY),--sign $(SIGNING_KEY))
	$(DEELIT) verify out/$(PROFILE) --firmware $(FIRMWARE) $(if $(SIGNER),--signer $(SIGNER)) \
		--junit-xml out/verify-$(PROFILE).xml --json out/verify-$(PROFILE).json

lint: python
	$(VENV)/bin/ruff check provisioner tests bench collections
	$(VENV)/bin/mypy
	$(VENV)/bin/ansible-lint --profile production roles

test: setup test-packages lint
	$(VENV)/bin/pytest -m "$(MARKERS)" $(PYTEST_ARGS)

test-quick: python
	$(VENV)/bin/pytest -m "not slow and not heavy_vm" $(PYTEST_ARGS)

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
