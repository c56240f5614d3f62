# Two commands do all the set-up on first use (virtual environment, the pinned torch pair, this package) and then
# their job: `make demo` runs the demo, `make test` the whole test suite (what .ci/run runs). `make test-fast` skips
# the tests that run nnU-Net's commands, trainings, torch.compile, DDP, SLURM or pip (marked `slow`).
PYTHON ?= python3
VENV ?= .venv
# the torch/torchvision pair that works with nnU-Net's trainer search
TORCH := torch==2.14.1 torchvision==0.29.1
INSTALLED := $(VENV)/.installed

.PHONY: demo test test-fast install

demo: $(INSTALLED)
	$(VENV)/bin/nnunetv2-imnet demo

test: $(INSTALLED)
	$(VENV)/bin/python -m pytest

test-fast: $(INSTALLED)
	$(VENV)/bin/python -m pytest -m "not slow"

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(TORCH) -e ".[test]"
	touch $@
