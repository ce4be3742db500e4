# `make test` and `make demo` do all the set-up on a fresh machine.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# Persistent XLA compilation cache: the suite is dominated by compile time.
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.cache/jax
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES ?= 0

.PHONY: test demo notebooks docs lint format install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test,experiments,flax,equinox]'
	touch $(STAMP)

install: $(STAMP)

# The suite checks float32 results to tight tolerances: run it on the CPU (set JAX_PLATFORMS to override).
# Its time is XLA compilation of many tiny programs. TEST_XLA_FLAGS compile them about twice as fast:
# XLA's CPU backend without its MLIR fusion emitters (their per-fusion pass pipeline was 30% of compile
# time, measured with perf), LLVM at -O0 and without its expensive passes. A jaxlib that no longer knows
# a flag would abort on it, so the flags are tried on one small program first (set XLA_FLAGS to
# override). --dist loadfile keeps each test module on one worker, so a module-scoped fixture (an
# experiment's smoke run) is computed once.
TEST_XLA_FLAGS := --xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false \
	--xla_llvm_disable_expensive_passes=true
test: $(STAMP)
	@flags="$(TEST_XLA_FLAGS)"; \
	XLA_FLAGS="$$flags" JAX_PLATFORMS=cpu $(BIN)/python -c 'import jax.numpy as jnp; jnp.ones(2).sum()' \
		>/dev/null 2>&1 || flags=--xla_backend_optimization_level=0; \
	echo "XLA_FLAGS=$${XLA_FLAGS:-$$flags}"; \
	JAX_PLATFORMS=$${JAX_PLATFORMS:-cpu} XLA_FLAGS="$${XLA_FLAGS:-$$flags}" \
		$(BIN)/python -m pytest -n auto --dist loadfile -q tests

demo: $(STAMP)
	$(BIN)/python -m experiments.demo

# Open the notebooks in JupyterLab (the .py files are the sources; jupytext keeps the .ipynb paired).
notebooks: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[notebooks]'
	$(BIN)/python notebooks/run.py --sync
	$(BIN)/jupyter lab notebooks/

# The API reference, generated from the docstrings by pdoc (no config files): build/docs/index.html.
# jaxrnn.nnx/.linen/.eqx are named since jaxrnn's __all__ (which pdoc follows) leaves them out; the
# deprecated alias jaxrnn.initializers is left out. tests/test_docs.py builds the same with warnings as errors.
DOCS_MODULES := jaxrnn jaxrnn.nnx jaxrnn.linen jaxrnn.eqx '!jaxrnn\.initializers$$'
docs: $(STAMP)
	@$(BIN)/python -c 'import pdoc' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[docs]'
	rm -rf build/docs
	JAX_PLATFORMS=$${JAX_PLATFORMS:-cpu} $(BIN)/python -m pdoc --docformat google -o build/docs $(DOCS_MODULES)
	@echo "API reference: $(CURDIR)/build/docs/index.html"

lint: $(STAMP)
	$(BIN)/ruff check jaxrnn tests experiments notebooks
	$(BIN)/ruff format --check jaxrnn tests experiments notebooks

format: $(STAMP)
	$(BIN)/ruff check --fix jaxrnn tests experiments notebooks
	$(BIN)/ruff format jaxrnn tests experiments notebooks

clean:
	rm -rf $(VENV) .cache .pytest_cache .hypothesis build *.egg-info
