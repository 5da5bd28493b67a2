"""CTC fine-tuning of a pretrained wav2vec 2.0 (Baevski et al., 2020, section 4) with the transformers Trainer.

Usage:
    # the default corpus and the tiny model pretrained by train_pretrain.py (CPU, a few minutes)
    python train_ctc.py --model_name_or_path runs/pretrain-tiny --dataset data/default_corpus/LibriSpeech \
        --split train-clean --eval_split dev-clean --test_split test-clean --output_dir runs/ctc-tiny

    # BASE on the Libri-light 10 h set (the paper's recipe; 2 GPUs x 4 accumulation steps = fairseq's 8 batches)
    accelerate launch --multi_gpu --num_processes 2 --mixed_precision bf16 train_ctc.py \
        --model_name_or_path runs/base --dataset /data/librispeech_finetuning --split 10h \
        --eval_dataset /data/LibriSpeech --eval_split dev-other --recipe 10h --gradient_accumulation_steps 4 \
        --output_dir runs/base-10h --push_to_hub --hub_model_id me/w2v2-base-10h

    # an official HF-layout folder (model_type wav2vec2, e.g. saved by transformers' Wav2Vec2ForPreTraining)
    torchrun --nproc_per_node 2 train_ctc.py --model_name_or_path path/to/wav2vec2-base ...

    # continue a stopped run from its last checkpoint in --output_dir
    python train_ctc.py ... --resume_from_checkpoint latest

The recipe (``--recipe``, default ``auto``) gives the defaults of everything the paper varies with the amount of
labelled data; any option given on the command line wins. ``10m``/``1h``/``10h``/``100h``/``960h`` are fairseq's
BASE fine-tuning configs (examples/wav2vec/config/finetuning/base_*.yaml): they assume 8 batches of
``max_tokens`` per update (processes x gradient_accumulation_steps = 8); LARGE used other peak LRs (e.g. 1e-4 on
10 h) and ``--mask_time_prob 0.75``. ``tiny`` is for the tiny preset on the synthetic default corpus on CPU.
``auto`` picks ``tiny`` for models narrower than BASE, else by the hours of training audio. The recipes are
``hf_wav2vec2.training.recipes.FINETUNING_RECIPES``.

Always, as in the paper: conv feature encoder frozen; only the CTC head trains for the first
``freeze_finetune_updates``; time masking (span 10) and channel masking (span 64); LayerDrop; tri-stage LR (10%
warm-up, 40% hold, 50% decay to 0.05x); Adam (0.9, 0.98), eps 1e-8, no weight decay, no gradient clipping; CTC with
zero_infinity, blank = pad = id 0, loss summed and divided by the utterances of the update (fairseq sentence_avg);
batches by total audio (``MaxTokensBatchSampler``, not ``group_by_length``); greedy-decoding WER and CER on the eval
split during training, the best-WER checkpoint loaded at the end.

The output folder ends as a complete Hub folder (``hf_wav2vec2.hub.save_hub_folder``): the model
(model.safetensors, config.json with ``auto_map``, our modeling code), the processor (vocab.json,
tokenizer_config.json, processor_config.json), a model card (README.md: WER/CER and the recipe) and
eval_results.json; ready for ``pipeline("automatic-speech-recognition", model=output_dir)`` after
``import hf_wav2vec2`` (or with ``trust_remote_code=True`` without it). ``--push_to_hub`` uploads that folder.

On Linux with glibc the script first restarts itself once with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (large CPU
buffers on transparent huge pages, see ``hf_wav2vec2.training.allocator``); ``--huge_pages false`` turns that off.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import torch
import transformers
from transformers import HfArgumentParser, TrainingArguments, Wav2Vec2Processor
from transformers.trainer_utils import IntervalStrategy, get_last_checkpoint

from hf_wav2vec2 import W2V2Config, W2V2ForCTC
from hf_wav2vec2.data import AudioDataset, load_speech_dataset
from hf_wav2vec2.data.ctc import CTCCollator, CTCReport, build_processor, build_vocabulary, filter_ctc_dataset
from hf_wav2vec2.hub import finetuned_model_card_info, push_hub_folder, save_hub_folder
from hf_wav2vec2.training import FINETUNING_RECIPES, choose_finetuning_recipe
from hf_wav2vec2.training.allocator import use_huge_pages
from hf_wav2vec2.training.finetune import CTCTrainer, argmax_logits, make_compute_metrics

logger = logging.getLogger("train_ctc")

@dataclass
class Arguments:
    model_name_or_path: str = field(metadata={"help": "a pretraining output folder (save_pretrained W2V2ForPreTraining)"
                                                      " or an official HF-layout wav2vec2 folder"})
    dataset: list[str] = field(metadata={"help": "Hub dataset name(s) or local LibriSpeech / Libri-light / audio "
                                                 "folder(s) with transcripts"})
    split: str | None = field(default=None, metadata={"help": "training split(s): train-clean-100, or a "
                                                              "Libri-light subset 10min / 1h / 10h"})
    eval_dataset: list[str] | None = field(default=None, metadata={"help": "eval source(s); default: --dataset"})
    eval_split: str | None = field(default=None, metadata={"help": "dev split: WER/CER during training and at the "
                                                                   "end"})
    test_split: str | None = field(default=None, metadata={"help": "also report WER/CER on this split at the end"})
    processor_name_or_path: str | None = field(default=None, metadata={"help": "reuse this processor (vocabulary) "
                                                                               "instead of building one"})
    recipe: str = field(default="auto", metadata={"help": "auto, tiny, 10m, 1h, 10h, 100h or 960h"})
    max_tokens: int | None = field(default=None, metadata={"help": "audio samples per device and batch"})
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    freeze_finetune_updates: int | None = field(default=None, metadata={"help": "updates training lm_head only"})
    mask_time_prob: float | None = field(default=None, metadata={"help": "p of the time mask (0.65; 0.5 for 960 h)"})
    mask_time_length: int = 10
    mask_feature_prob: float | None = field(default=None, metadata={"help": "p of the channel mask (0.1-0.5)"})
    mask_feature_length: int = 64
    layerdrop: float | None = None
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.1
    feat_proj_dropout: float = 0.0
    final_dropout: float = 0.0
    huge_pages: bool = field(default=True, metadata={"help": "restart once with GLIBC_TUNABLES=glibc.malloc.hugetlb=1"
                                                             " (large CPU buffers on transparent huge pages: CPU steps "
                                                             "otherwise spend as long in page faults as in the model);"
                                                             " --huge_pages false turns it off"})


@dataclass
class CTCTrainingArguments(TrainingArguments):
    """transformers' TrainingArguments with the paper's fine-tuning defaults; None means "from the recipe"."""

    learning_rate: float | None = field(default=None, metadata={"help": "peak LR; default: the recipe's"})
    max_steps: int | None = field(default=None, metadata={"help": "updates; default: the recipe's (-1: epochs)"})
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-8
    max_grad_norm: float = field(default=0.0, metadata={"help": "0: no clipping, as fairseq's recipes"})
    logging_steps: float = 10
    eval_strategy: str = "steps"
    eval_steps: float | None = field(default=0.1, metadata={"help": "below 1: a fraction of max_steps"})
    save_strategy: str = "steps"
    save_steps: float = 0.1
    save_total_limit: int | None = 2
    load_best_model_at_end: bool = True
    metric_for_best_model: str | None = "wer"
    greater_is_better: bool | None = False
    remove_unused_columns: bool = False  # the collator reads "text" and "path"
    ddp_find_unused_parameters: bool | None = True  # frozen stage and LayerDrop leave parameters without gradient


def main():
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # torchrun on CPU-only machines: without this the Trainer trains WORLD_SIZE independent copies.
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    parser = HfArgumentParser((Arguments, CTCTrainingArguments))
    # Restart (same arguments) before the arguments become dataclasses: building TrainingArguments sets up the
    # device and torch.distributed, which the restarted process would then do a second time under the same pid.
    if parser.parse_args().huge_pages:
        use_huge_pages()
    args, training_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # per-eval notes on dynamic batch sizes
    if args.eval_split is None:  # no dev split: no WER during training, nothing to pick the best checkpoint by
        training_args.eval_strategy = IntervalStrategy.NO
        training_args.load_best_model_at_end = False
    config = W2V2Config.from_pretrained(args.model_name_or_path)

    # 1. data: utterances with transcripts; the same normalisation as the vocabulary and the references. Audio
    # shorter than the receptive field (no frame) is skipped and logged.
    min_samples = config.receptive_field
    train = load_speech_dataset(args.dataset, split=args.split, min_duration_s=args.min_duration_s,
                                max_duration_s=args.max_duration_s, min_samples=min_samples)
    train_hours = sum(train["duration"]) / 3600
    recipe_name = choose_finetuning_recipe(args.recipe, config, train_hours)
    chosen = FINETUNING_RECIPES[recipe_name].fill_unset(args, training_args)  # what the command line left unset
    logger.info("recipe %s (%.2f h of training audio): %s", recipe_name, train_hours, chosen)
    eval_set = None
    if args.eval_split:
        eval_set = load_speech_dataset(args.eval_dataset or args.dataset, split=args.eval_split,
                                       min_samples=min_samples)

    # 2. processor: letters of the training transcripts, [PAD] = blank = 0, [UNK], "|" between words
    if args.processor_name_or_path:
        processor = Wav2Vec2Processor.from_pretrained(args.processor_name_or_path)
    else:
        processor = build_processor(build_vocabulary(train["text"]), feat_extract_norm=config.feat_extract_norm)
    tokenizer = processor.tokenizer
    logger.info("vocabulary (%d): %s", len(tokenizer), "".join(tokenizer.convert_ids_to_tokens(range(len(tokenizer)))))

    # 3. model: pretrained encoder + a new CTC head, with the fine-tuning overrides of the recipe
    model = W2V2ForCTC.from_pretrained(
        args.model_name_or_path, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None, eos_token_id=None, ctc_loss_reduction="sum", ctc_zero_infinity=True,
        freeze_finetune_updates=args.freeze_finetune_updates, apply_spec_augment=True,
        mask_time_prob=args.mask_time_prob, mask_time_length=args.mask_time_length,
        mask_feature_prob=args.mask_feature_prob, mask_feature_length=args.mask_feature_length,
        layerdrop=args.layerdrop, hidden_dropout=args.hidden_dropout, attention_dropout=args.attention_dropout,
        activation_dropout=args.activation_dropout, feat_proj_dropout=args.feat_proj_dropout,
        final_dropout=args.final_dropout,
    )
    if training_args.max_steps > 0 and args.freeze_finetune_updates >= training_args.max_steps:
        logger.warning("freeze_finetune_updates (%d) >= max_steps (%d): only the CTC head will train",
                       args.freeze_finetune_updates, training_args.max_steps)

    # 4. drop what CTC cannot learn from (empty transcripts, audio too short for its labels), reported
    report = CTCReport()
    train = filter_ctc_dataset(train, processor, model.num_frames, report)
    if eval_set is not None:
        eval_set = filter_ctc_dataset(eval_set, processor, model.num_frames, report)
    if report.dropped or report.unknown_characters:
        logger.warning("dropped before training: %s; characters mapped to [UNK]: %s", dict(report.dropped),
                       dict(report.unknown_characters))
    logger.info("train: %d utterances, %.2f h; eval: %s utterances", len(train), sum(train["duration"]) / 3600,
                len(eval_set) if eval_set is not None else "no")

    # 5. train
    trainer = CTCTrainer(
        model=model, args=training_args, train_dataset=AudioDataset(train, min_samples=min_samples),
        eval_dataset=AudioDataset(eval_set, min_samples=min_samples) if eval_set is not None else None,
        data_collator=CTCCollator(processor, model.num_frames, min_samples=min_samples), processing_class=processor,
        compute_metrics=make_compute_metrics(processor), preprocess_logits_for_metrics=argmax_logits,
        max_tokens=args.max_tokens,
    )
    resume = training_args.resume_from_checkpoint
    if resume in ("latest", "true", "True"):
        resume = get_last_checkpoint(training_args.output_dir)
        if resume is None:
            logger.info("no checkpoint in %s: starting from scratch", training_args.output_dir)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.log_metrics("train", result.metrics)

    # 6. evaluate (the best-WER checkpoint when load_best_model_at_end) and save model + processor
    results = {}
    if eval_set is not None:
        results[args.eval_split] = trainer.evaluate(metric_key_prefix="eval")
    if args.test_split:
        test = load_speech_dataset(args.eval_dataset or args.dataset, split=args.test_split, min_samples=min_samples)
        test = filter_ctc_dataset(test, processor, model.num_frames, report)
        results[args.test_split] = trainer.evaluate(AudioDataset(test, min_samples=min_samples),
                                                    metric_key_prefix="test")
    if trainer.is_world_process_zero():
        # model + config + our modeling code with auto_map + processor + model card: a complete Hub folder
        card = finetuned_model_card_info(args, training_args, recipe_name, chosen, train_hours, results)
        save_hub_folder(trainer.model, processor, training_args.output_dir, card=card)
        with open(os.path.join(training_args.output_dir, "eval_results.json"), "w") as handle:
            json.dump({"recipe": recipe_name, "results": results, "log_history": trainer.state.log_history},
                      handle, indent=1)
        for split, metrics in results.items():
            prefix = "eval" if split == args.eval_split else "test"
            print(f"{split}: WER {100 * metrics[f'{prefix}_wer']:.2f}%  CER {100 * metrics[f'{prefix}_cer']:.2f}%")
        print(f"model, processor and model card: {training_args.output_dir}")
        if training_args.push_to_hub:
            # Trainer.push_to_hub would overwrite our card with its own: upload the folder as written.
            repo_id = training_args.hub_model_id or os.path.basename(os.path.abspath(training_args.output_dir))
            push_hub_folder(training_args.output_dir, repo_id, token=training_args.hub_token,
                            private=training_args.hub_private_repo)
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
