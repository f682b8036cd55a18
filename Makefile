# Two commands: `make demo` and `make test`. Everything else is a helper they call.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test install clean-venv pytest nbval strip

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): requirements.txt pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m covgan_utils data locate || $(PY) -m covgan_utils data download
	cd notebooks && COVGAN_PRESET=quick ../$(PY) -m jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1 00_data.ipynb 01_train.ipynb 02_interpolate.ipynb
	@echo "Executed notebooks are in notebooks/ (strip outputs with 'make strip' before committing)."

test: install
	COVGAN_SMOKE=1 $(PY) -m pytest -q tests
	COVGAN_SMOKE=1 $(PY) -m pytest -q --nbval-lax -p no:cacheprovider notebooks

strip:
	$(PY) -m nbstripout notebooks/*.ipynb

clean-venv:
	rm -rf $(VENV)
