# `make report` and `make test` set everything up on a fresh machine (Python 3.11) and run.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: report quick test bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

report: $(STAMP)
	$(VENV)/bin/python -m resreport build $(ARGS)

quick: $(STAMP)
	$(VENV)/bin/python -m resreport build --quick $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(ARGS)

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_gradients.py
	$(VENV)/bin/python benchmarks/bench_cifar.py

clean:
	rm -rf build
