# The two commands of the README; each does its own setup.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup system-packages bench clean

demo: $(STAMP) system-packages
	bash scripts/demo.sh

test: $(STAMP) system-packages
	$(VENV)/bin/ruff check reconciler tests bench
	$(VENV)/bin/mypy reconciler
	$(VENV)/bin/pytest -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check reconciler tests bench
	$(VENV)/bin/mypy reconciler

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Real nginx (with the stream module), sshd and etcd for the tests; installed when missing.
system-packages:
	@bash scripts/system-packages

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
