# The README's commands. `make test` is what CI runs (.ci/run); `make default` runs the default job.
PYTHON ?= python3
STAMP := .make/setup.stamp

CORPUS := data/default_corpus
RUNS := runs
PRETRAIN_STEPS ?= 400
FINETUNE_STEPS ?= 1500
# seed of both training stages (masks, negatives, dropout, data order, the CTC head's init)
SEED ?= 0
LM := $(RUNS)/lm/train-clean-4gram.arpa
# bf16 autocast where the CPU computes bf16 natively (AVX512-BF16 or AMX; measured 1.6x per pretraining update and
# 1.5x per fine-tuning update there) or on a GPU that supports it; fp32 elsewhere (emulated bf16 is several times
# slower: hf_wav2vec2.training.precision).
BF16 ?= $(shell $(PYTHON) -c "import torch; from hf_wav2vec2.training.precision import cpu_computes_bf16; \
	print(str(torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_computes_bf16()).lower())" \
	2>/dev/null || echo false)

.PHONY: setup test default corpus pretrain codebook finetune lm evaluate transcribe bench lint experiment

setup: $(STAMP)
$(STAMP): pyproject.toml Makefile
	# torch first, pinned: on our machines 2.13.0 resolves to the local CPU build (a looser pin pulls CUDA wheels).
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[dev,lm,corpus,figures]"
	mkdir -p .make && touch $(STAMP)

test: setup
	$(PYTHON) -m pytest tests

lint: setup
	$(PYTHON) -m ruff check hf_wav2vec2 tests benchmarks experiments *.py

bench: setup
	$(PYTHON) benchmarks/bench_vs_transformers.py --compile

# The low-resource comparison: pretrained vs random init, each fine-tuned on 10 min / 1 h / all of the labels
# (43 min on 2 cores with bf16, measured from nothing; docs/experiments.md).
experiment: setup
	$(PYTHON) experiments/low_resource.py --output_dir $(RUNS)/experiment --corpus_dir data/experiment_corpus \
		--bf16 $(BF16)

# The default job: the whole pipeline on the small synthetic corpus, on CPU (2 cores, bf16: 14.5 min measured with the
# shared machine at 357 GFLOP/s fp32 matmul, 18.1 min with SEED=1 as it slowed to 223; docs/experiments.md):
# corpus -> self-supervised pretraining -> codebook analysis (Figure 3) -> CTC fine-tuning -> test-set WER ->
# transcription of one file.
default: codebook transcribe
	cp $(RUNS)/ctc-tiny/README.md model_cards/ctc-tiny.md   # the card of the current default model
	@echo "pretrained model : $(RUNS)/pretrain-tiny (model card: $(RUNS)/pretrain-tiny/README.md, TensorBoard: $(RUNS)/pretrain-tiny/logs)"
	@echo "codebook (Fig. 3): $(RUNS)/codebook-tiny/codebook.json, plot: $(RUNS)/codebook-tiny/p_phone_given_code.png"
	@echo "fine-tuned model : $(RUNS)/ctc-tiny (model card: $(RUNS)/ctc-tiny/README.md, TensorBoard: $(RUNS)/ctc-tiny/runs)"
	@echo "4-gram LM        : $(LM)"
	@echo "test-clean scores: $(RUNS)/ctc-tiny/test_results.json (greedy, and beam search with the LM)"

corpus: $(CORPUS)/LibriSpeech/corpus.json
$(CORPUS)/LibriSpeech/corpus.json: | setup
	$(PYTHON) -m hf_wav2vec2.corpus --output_dir $(CORPUS)

# The paper's Gumbel schedule (temperature stays near 2 over 400 updates), not the script's run-length-proportional
# default: measured on one machine, it fine-tunes to test WER/CER 55.9/21.4 against 64.5/25.5 (docs/experiments.md).
pretrain: setup corpus
	ACCELERATE_MIXED_PRECISION=$(if $(filter true,$(BF16)),bf16,no) $(PYTHON) train_pretrain.py --dataset_name $(CORPUS)/LibriSpeech \
		--train_split_name train-clean --eval_split_name dev-clean \
		--config tiny --output_dir $(RUNS)/pretrain-tiny --max_steps $(PRETRAIN_STEPS) --eval_steps 50 \
		--save_steps 200 --resume_from_checkpoint latest --gumbel_schedule paper --seed $(SEED)

codebook: pretrain
	$(PYTHON) -m hf_wav2vec2.analysis.codebook --model $(RUNS)/pretrain-tiny --dataset_name $(CORPUS)/LibriSpeech \
		--eval_split_name dev-clean --output_dir $(RUNS)/codebook-tiny

finetune: pretrain
	$(PYTHON) train_ctc.py --model_name_or_path $(RUNS)/pretrain-tiny --dataset_name $(CORPUS)/LibriSpeech \
		--train_split_name train-clean --eval_split_name dev-clean --test_split_name test-clean --output_dir $(RUNS)/ctc-tiny \
		--recipe tiny --max_steps $(FINETUNE_STEPS) --bf16 $(BF16) --disable_tqdm true --resume_from_checkpoint latest \
		--seed $(SEED)

# A word 4-gram (Kneser-Ney, hf_wav2vec2.ngram) from the train-clean transcripts, written as the model's labels are;
# the corpus keeps dev and test sentences out of train-clean.
lm: $(LM)
$(LM): | finetune
	$(PYTHON) -m hf_wav2vec2.ngram --dataset_name $(CORPUS)/LibriSpeech --train_split_name train-clean --model $(RUNS)/ctc-tiny \
		--order 4 --output $(LM)

# Greedy and LM scores in one file; the LM weights were chosen on dev-clean (docs/experiments.md)
evaluate: lm
	$(PYTHON) evaluate_ctc.py --model $(RUNS)/ctc-tiny --dataset_name $(CORPUS)/LibriSpeech --eval_split_name test-clean \
		--kenlm $(LM) --beam_size 200 --lm_weight 1 --word_score 0 --output_json $(RUNS)/ctc-tiny/test_results.json

transcribe: evaluate
	$(PYTHON) transcribe.py --model $(RUNS)/ctc-tiny --kenlm $(LM) --beam_size 200 --lm_weight 1 --word_score 0 \
		--files $$(find $(CORPUS)/LibriSpeech/test-clean -name '*.flac' | sort | head -1) --timestamps word
