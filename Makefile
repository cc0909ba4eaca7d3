# Two commands for a newcomer: `make demo` and `make test`.
# Each creates .venv if missing, installs tfeed (and, as root, the Debian
# packages it needs), then runs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.tfeed-installed
PYTEST_ARGS ?= -n 2  # two workers (pytest-xdist): 8 min instead of 14 on 2 cores

.PHONY: demo test bench sysdeps native torch clean

demo: $(STAMP)
	$(PY) -m tfeed.app.demo

test: $(STAMP) sysdeps native torch
	$(PY) -m pytest $(PYTEST_ARGS)

# PyTorch for the PyTorch example's test, only from a local CPU wheel (pip's
# find-links): never a multi-GB CUDA download. Without it that test skips.
torch: $(STAMP)
	@$(PY) -c "import torch" 2>/dev/null || \
	  ($(PY) -m pip install -q --no-index --no-deps 'torch==2.13.0' 2>/dev/null && \
	   $(PY) -m pip install -q 'torch==2.13.0') || \
	  echo "no local torch wheel: the PyTorch example test will be skipped" >&2

# The native fetch op, compiled against the installed TensorFlow (cached per
# TF version; tfeed falls back to its Python engine if this cannot build).
native: $(STAMP) sysdeps
	$(PY) -m tfeed.kernels.build || echo "native fetch op not built: tfeed will use its Python engine" >&2

bench: $(STAMP) sysdeps native
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(PY) benchmarks/bench_fetch.py
	$(PY) benchmarks/bench_cache.py

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

sysdeps:
	bash .ci/sysdeps

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
