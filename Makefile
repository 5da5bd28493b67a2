# The README's commands. `make test` is what CI runs (.ci/run); `make default` runs the default job.
PYTHON ?= python3
STAMP := .make/setup.stamp

.PHONY: setup test default bench lint

setup: $(STAMP)
$(STAMP): pyproject.toml Makefile
	# torch first, pinned: on our machines 2.13.0 resolves to the local CPU build (a looser pin pulls CUDA wheels).
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	mkdir -p .make && touch $(STAMP)

test: setup
	$(PYTHON) -m pytest tests

lint: setup
	$(PYTHON) -m ruff check hf_wav2vec2 tests benchmarks

bench: setup
	GLIBC_TUNABLES=glibc.malloc.hugetlb=1 $(PYTHON) benchmarks/bench_vs_transformers.py
