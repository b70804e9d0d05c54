# The two commands of the README; each does its own setup.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# Every install comes from the lock: exact versions, every file's hash. The package itself is
# installed without dependencies and with the build backend from the lock (no isolation).
PIP_LOCKED := -m pip install --quiet --require-hashes --only-binary :all: -r $(LOCK)
PIP_SELF := -m pip install --quiet --no-deps --no-build-isolation -e .
LATEST ?= .venv-latest

.PHONY: demo test lint setup system-packages lock test-latest bench clean

demo: $(STAMP) system-packages
	bash scripts/demo.sh

test: lint system-packages
	$(VENV)/bin/pytest -n 2 $(PYTEST_ARGS)

# ruff, mypy strict over the code, its tests and benchmarks, and the layer contracts of
# pyproject.toml's [tool.importlinter] (docs/architecture.md).
lint: $(STAMP)
	$(VENV)/bin/ruff check reconciler tests bench
	$(VENV)/bin/mypy reconciler tests bench
	$(VENV)/bin/lint-imports --no-cache

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) $(PIP_LOCKED)
	$(PY) $(PIP_SELF)
	$(PY) -m compileall -q reconciler  # as a wheel's install does: no compiling at every start
	touch $(STAMP)

# Refresh the lock from pyproject.toml's ranges (runtime, test, bench and lock extras), for every
# platform and Python >= 3.11. Needs the network; commit the result with the change that asked.
# requirements-runtime.lock is the runtime subset at the same versions (the wheel test and
# users who install obreconcile from a checkout use it).
UV_COMPILE := $(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes --quiet
lock: $(STAMP)
	$(UV_COMPILE) --extra test --extra bench --extra lock -o $(LOCK)
	$(UV_COMPILE) --constraint $(LOCK) -o requirements-runtime.lock

# The newest versions the ranges allow, in a virtualenv of their own: drift shows up here as a
# named failure before it reaches a lock update.
test-latest: system-packages
	rm -rf $(LATEST)
	python3 -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade -e '.[test]'
	$(LATEST)/bin/pip list --format=freeze > $(LATEST)/versions.txt
	$(LATEST)/bin/ruff check reconciler tests bench
	$(LATEST)/bin/mypy reconciler tests bench
	$(LATEST)/bin/lint-imports --no-cache
	$(LATEST)/bin/pytest -n 2 $(PYTEST_ARGS)

# Real nginx (with the stream module), sshd and etcd for the tests; installed when missing.
system-packages:
	@bash scripts/system-packages

clean:
	rm -rf $(VENV) $(LATEST) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
