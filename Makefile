# Entry points, each setting itself up on a fresh machine:
#   make quick   run suites/quick.yaml and render reports/quick/
#   make test    run the test suite
#   make faults  kill the driver again and again and count what was lost (several minutes)
#   make bench   print every speed ratio against its reference, measured side by side (minutes)
# The virtual environment lives in .venv/ and is rebuilt only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
# torch and torchvision are installed first, as a matched pair; override for another platform,
# e.g. make TORCH="torch torchvision --index-url https://download.pytorch.org/whl/cpu" test
TORCH ?= torch==2.14.1 torchvision==0.29.1
CKSUM := $(shell cksum pyproject.toml | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(CKSUM)
# The test tools (Ray, pyarrow, Hypothesis, peft) are a second step: quick does not wait for them.
DEV_STAMP := $(VENV)/.installed-dev-$(CKSUM)

.PHONY: quick test faults bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet $(TORCH)
	$(VENV)/bin/python -m pip install --quiet -e .
	rm -f $(VENV)/.installed-*
	touch $@

$(DEV_STAMP): $(STAMP)
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

quick: $(STAMP)
	$(VENV)/bin/transfer-bench run suites/quick.yaml

test: $(DEV_STAMP)
	$(VENV)/bin/python -m pytest

# SIGKILL the driver 60 times, mostly while cells train; prints lost / duplicated / half-written / orphan counts.
faults: $(DEV_STAMP)
	$(VENV)/bin/python -m tests.kill_driver --kills 60

bench: $(DEV_STAMP)
	$(VENV)/bin/python -m tests.perf.ratios

clean:
	rm -rf results/*.db* results/pretrained reports/*/
