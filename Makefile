# The two commands of README.md. Both create or update .venv from requirements.lock.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean bench-tf

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/connectome demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo-workspace

# Bench-only TensorFlow for the FFN baselines (kept out of .venv; the benches look in .bench-tf).
.bench-tf/.installed: bench/requirements-tf.txt $(STAMP)
	$(PY) -m pip install --quiet --no-deps --target .bench-tf -r bench/requirements-tf.txt
	touch $@

bench-tf: .bench-tf/.installed
