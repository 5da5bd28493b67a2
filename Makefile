# The README's commands. `make test` is what CI runs (.ci/run); `make default` runs the default job.
PYTHON ?= python3
STAMP := .make/setup.stamp

CORPUS := data/default_corpus
RUNS := runs
PRETRAIN_STEPS ?= 400

.PHONY: setup test default corpus pretrain bench lint

setup: $(STAMP)
$(STAMP): pyproject.toml Makefile
	# torch first, pinned: on our machines 2.13.0 resolves to the local CPU build (a looser pin pulls CUDA wheels).
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[dev,lm]"
	mkdir -p .make && touch $(STAMP)

test: setup
	$(PYTHON) -m pytest tests

lint: setup
	$(PYTHON) -m ruff check hf_wav2vec2 tests benchmarks

bench: setup
	GLIBC_TUNABLES=glibc.malloc.hugetlb=1 $(PYTHON) benchmarks/bench_vs_transformers.py

# The default job: the whole pipeline on the small synthetic corpus, on CPU.
default: pretrain
	@echo "pretrained model: $(RUNS)/pretrain-tiny (TensorBoard logs: $(RUNS)/pretrain-tiny/logs)"

corpus: $(CORPUS)/LibriSpeech/corpus.json
$(CORPUS)/LibriSpeech/corpus.json: | setup
	$(PYTHON) -m hf_wav2vec2.data.synth --output_dir $(CORPUS)

pretrain: setup corpus
	$(PYTHON) train_pretrain.py --dataset $(CORPUS)/LibriSpeech --split train-clean --dev_split dev-clean \
		--config tiny --output_dir $(RUNS)/pretrain-tiny --max_steps $(PRETRAIN_STEPS) --eval_steps 50 \
		--save_steps 200 --resume_from_checkpoint latest
