# The two commands of the README: `make demo` (the main job) and `make test`
# (the whole suite). Both create the project's own virtual environment first.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= compile,bench,deploy,dev

.PHONY: demo test venv clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m sample_models

test: venv
	$(PY) -m pytest

clean:
	rm -rf $(VENV) artifacts reports
