"""CTC fine-tuning of a pretrained wav2vec 2.0 (Baevski et al., 2020, section 4) with the transformers Trainer.

Usage:
    # the default corpus and the tiny model pretrained by train_pretrain.py (CPU, a few minutes)
    python train_ctc.py --model_name_or_path runs/pretrain-tiny --dataset_name data/default_corpus/LibriSpeech \
        --train_split_name train-clean --eval_split_name dev-clean --test_split_name test-clean \
        --output_dir runs/ctc-tiny

    # BASE on the Libri-light 10 h set (the paper's recipe; 2 GPUs x 4 accumulation steps = fairseq's 8 batches)
    accelerate launch --multi_gpu --num_processes 2 --mixed_precision bf16 train_ctc.py \
        --model_name_or_path runs/base --dataset_name /data/librispeech_finetuning --train_split_name 10h \
        --eval_dataset_name /data/LibriSpeech --eval_split_name dev-other --recipe 10h \
        --gradient_accumulation_steps 4 \
        --output_dir runs/base-10h --push_to_hub --hub_model_id me/w2v2-base-10h

    # any language, any Hub dataset (or a local folder datasets reads), with the transformers examples' names
    python train_ctc.py --model_name_or_path runs/base --dataset_name mozilla-foundation/common_voice_17_0 \
        --dataset_config_name fr --train_split_name train+validation --eval_split_name test \
        --text_column_name sentence --chars_to_ignore , '?' . ! - ';' : « » --output_dir runs/base-fr

    # an official HF-layout folder (model_type wav2vec2, e.g. saved by transformers' Wav2Vec2ForPreTraining)
    torchrun --nproc_per_node 2 train_ctc.py --model_name_or_path path/to/wav2vec2-base ...

    # two processes on a machine without GPU (gloo): torchrun as above, or accelerate's multi-process launcher
    # (accelerate 1.15's `--cpu --num_processes 2` starts a single process: its multi-CPU launch needs mpirun)
    accelerate launch --multi_gpu --num_processes 2 train_ctc.py ...

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

With N processes, the batches of an epoch (reshuffled every epoch, also in an epoch resumed in the middle) are
dealt out in turn, their count made a multiple of N by halving the fullest ones: every process runs as many steps
and each utterance is trained on once per epoch. ``--batch_record <path>`` makes each
process append the utterance ids of every training batch it collates to ``<path>.<process index>`` (JSON lines
with the epoch), to check the data order.

Dataset options carry the transformers examples' names (``--dataset_name``, ``--dataset_config_name``,
``--train_split_name``, ``--eval_split_name``, ``--audio_column_name``, ``--text_column_name``,
``--max_train_samples``, ``--max_eval_samples``); the earlier ones (``--dataset``, ``--hub_config``, ``--split``,
``--eval_dataset``, ``--eval_split``, ``--test_split``) still work, with a warning, until version 0.2.

Transcripts: ``--text_normalization auto`` (default) keeps LibriSpeech's English normalisation for LibriSpeech and
Libri-light sources and uses NFC text that keeps the letters of every script for everything else
(``hf_wav2vec2.data.TextNormalizer``; ``--chars_to_ignore`` and ``--text_case`` as in the transformers examples,
lower case by default). The vocabulary is every character of the normalised training transcripts. The choice is
stored in the processor (``tokenizer_config.json``, ``text_normalization``), so the dev/test WER here,
``evaluate_ctc.py`` and every checkpoint use the same one.

No option is silently ignored: TrainingArguments options the recipe replaces (``--per_device_train_batch_size``,
``--group_by_length``, ``--lr_scheduler_type``, ``--warmup_steps``, ...) stop the run at start with what to use
instead (``REPLACED_OPTIONS``); ``--num_train_epochs`` is honoured (the tri-stage schedule spans those epochs) unless
``--max_steps`` is given too. Without ``--eval_split_name`` there is no evaluation during training and no best
checkpoint, and options that need one are refused. Logs go to TensorBoard (``--report_to tensorboard``, the
default: event files under ``<output_dir>/runs``).

The output folder ends as a complete Hub folder (``hf_wav2vec2.hub.save_hub_folder``): the model
(model.safetensors, config.json with ``auto_map``, our modeling code), the processor (vocab.json,
tokenizer_config.json, processor_config.json), a model card (README.md: WER/CER and the recipe) and
eval_results.json; ready for ``pipeline("automatic-speech-recognition", model=output_dir)`` after
``import hf_wav2vec2`` (or with ``trust_remote_code=True`` without it). ``--push_to_hub`` uploads that folder.

On Linux with glibc the script first restarts itself once with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (large CPU
buffers on transparent huge pages, see ``hf_wav2vec2.training.allocator``); ``--huge_pages false`` turns that off.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field

import torch
import transformers
from transformers import HfArgumentParser, TrainingArguments, Wav2Vec2Processor, set_seed
from transformers.trainer import TRAINER_STATE_NAME

from hf_wav2vec2 import W2V2Config, W2V2ForCTC
from hf_wav2vec2.cli.card_info import finetuned_model_card_info
from hf_wav2vec2.cli.cards import build_model_card
from hf_wav2vec2.cli.common import DataArguments, start_run, warn_if_emulated_bf16, warn_renamed_options
from hf_wav2vec2.data import LIBRISPEECH, AudioDataset, TextNormalizer, default_normalizer, load_speech_dataset
from hf_wav2vec2.data.ctc import (
    CTCCollator,
    CTCReport,
    build_processor,
    build_vocabulary,
    filter_ctc_dataset,
    processor_normalizer,
    set_processor_normalizer,
)
from hf_wav2vec2.data.text import STYLES
from hf_wav2vec2.feature_cache import FeatureCache
from hf_wav2vec2.hub import push_hub_folder, save_hub_folder
from hf_wav2vec2.training import FINETUNING_RECIPES, choose_finetuning_recipe
from hf_wav2vec2.training.allocator import use_huge_pages
from hf_wav2vec2.training.checkpoints import check_output_dir, latest_checkpoint
from hf_wav2vec2.training.finetune import CTCTrainer

logger = logging.getLogger("train_ctc")


@dataclass(kw_only=True)
class Arguments(DataArguments):
    """The script's own options; the data's are :class:`DataArguments` (the transformers examples' names)."""

    model_name_or_path: str = field(metadata={"help": "a pretraining output folder (save_pretrained W2V2ForPreTraining)"
                                                      " or an official HF-layout wav2vec2 folder"})
    test_split_name: str | None = field(default=None, metadata={
        "aliases": ["--test_split"], "help": "also report WER/CER on this split at the end (formerly --test_split)"})
    text_column_name: str | None = field(default=None, metadata={
        "help": "transcript column of a datasets source; default: the first of text, sentence, transcription, "
        "transcript, normalized_text"})
    text_normalization: str = field(default="auto", metadata={
        "help": "transcript normalisation, stored with the processor: auto (librispeech for LibriSpeech / Libri-light"
        " sources, else unicode), librispeech (upper-case A-Z and apostrophes, English only) or unicode (NFC, every "
        "script's letters, see --chars_to_ignore and --text_case); ignored with --processor_name_or_path, whose "
        "stored choice is used"})
    chars_to_ignore: list[str] | None = field(default=None, metadata={
        "help": "unicode style: characters deleted from transcripts, as in the transformers examples "
        "(--chars_to_ignore , ? . ! - ; :); default: every punctuation and symbol character except the apostrophe "
        "becomes a space"})
    text_case: str | None = field(default=None, metadata={"help": "unicode style: lower (default), upper or keep"})
    processor_name_or_path: str | None = field(default=None, metadata={"help": "reuse this processor (vocabulary "
                                                                               "and normalisation) instead of "
                                                                               "building one"})
    recipe: str = field(default="auto", metadata={"help": "auto, tiny, 10m, 1h, 10h, 100h or 960h"})
    max_tokens: int | None = field(default=None, metadata={"help": "audio samples per device and batch (instead of "
                                                                   "a batch size: batches are built by total audio)"})
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
    batch_record: str | None = field(default=None, metadata={
        "help": "debugging: each process appends the utterance ids of every training batch it collates to "
                "BATCH_RECORD.<process index> (JSON lines with the epoch), to check the data order"})
    feature_cache_gb: float = field(default=2.0, metadata={
        "help": "keep each utterance's frames from the frozen feature encoder, up to this many GB (in CPU memory): "
                "epochs after the first skip the encoder (hf_wav2vec2.feature_cache; exact); 0 turns it off"})
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
    overwrite_output_dir: bool = field(default=False, metadata={"help": "delete the checkpoints and model of a "
                                                                        "previous run in --output_dir first"})
    max_consecutive_skips: int = field(default=10, metadata={"help": "stop when this many updates in a row are "
                                                                     "skipped (non-finite loss or gradient, or no "
                                                                     "usable example)"})
    report_to: None | str | list[str] = field(default="tensorboard", metadata={
        "help": "loggers: tensorboard (default; event files under output_dir/runs), wandb, ..., or none"})


# TrainingArguments options (some only in older transformers, or in the examples' scripts) that the CTCTrainer does
# not use, and what to use instead: given on the command line, they stop the run at start, never silently ignored.
REPLACED_OPTIONS = {
    "per_device_train_batch_size": "batches are built by total audio: use --max_tokens (audio samples per device "
                                   "and batch; default: the recipe's)",
    "per_device_eval_batch_size": "evaluation batches are built by total audio too: use --max_tokens",
    "auto_find_batch_size": "batches are built by total audio: lower --max_tokens if memory runs out",
    "group_by_length": "batches are always grouped by length: MaxTokensBatchSampler builds them by total audio "
                       "(--max_tokens)",
    "length_column_name": "lengths come from the num_samples column of the loaded dataset",
    "lr_scheduler_type": "the schedule is the paper's tri-stage LR (10% warm-up from 0.01x, 40% hold, 50% decay "
                         "to 0.05x of --learning_rate over --max_steps)",
    "lr_scheduler_kwargs": "the tri-stage schedule has fixed phase ratios (10% / 40% / 50%)",
    "warmup_steps": "the warm-up is the first 10% of the tri-stage schedule: its length follows --max_steps",
    "warmup_ratio": "the warm-up is the first 10% of the tri-stage schedule: its length follows --max_steps",
    "label_smoothing_factor": "the CTC loss has no label smoothing",
    "batch_eval_metrics": "WER and CER are computed once over the whole eval split",
    "remove_unused_columns": "the collator needs the text and path columns: they are always kept",
    "do_predict": "use --test_split_name to score a test split at the end (or evaluate_ctc.py)",
}


def given_options(argv: list[str]) -> set[str]:
    """The ``dest`` of every option written on the command line (old names included), defaults left out, plus the
    names of options the parser does not know (``--warmup_ratio`` of older transformers)."""
    probe = HfArgumentParser((Arguments, CTCTrainingArguments))
    for action in probe._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    namespace, unknown = probe.parse_known_args(argv)
    return set(vars(namespace)) | {item[2:].split("=")[0] for item in unknown if item.startswith("--")}


def check_options(argv: list[str]) -> dict:
    """Refuse options that would be ignored (``REPLACED_OPTIONS``) or contradict the data, before any work; return
    the parser defaults that make a run without dev split consistent (no evaluation, no best checkpoint) and let
    ``--bf16`` run on a machine without a GPU (autocast on the CPU)."""
    given = given_options(argv)
    for name in sorted(given & set(REPLACED_OPTIONS)):
        raise SystemExit(f"train_ctc.py: --{name} is not used here: {REPLACED_OPTIONS[name]}")
    if {"num_train_epochs", "max_steps"} <= given:
        raise SystemExit("train_ctc.py: give --max_steps or --num_train_epochs, not both (the tri-stage schedule "
                         "spans the run)")
    parsed = HfArgumentParser((Arguments, CTCTrainingArguments)).parse_known_args(argv)[0]
    has_eval_split = parsed.eval_split_name is not None
    if "do_train" in given and not parsed.do_train:
        raise SystemExit("train_ctc.py: --do_train false: this script always trains; evaluate_ctc.py scores a model")
    if "do_eval" in given and parsed.do_eval != has_eval_split:
        raise SystemExit("train_ctc.py: --do_eval follows --eval_split_name: give a dev split to evaluate, none not "
                         "to")
    defaults = {}
    if parsed.bf16 and not torch.cuda.is_available():
        # transformers refuses bf16 without a GPU unless --use_cpu is given; without a GPU the CPU is the device
        defaults["use_cpu"] = True
    if has_eval_split:
        # The examples' habit, --eval_steps 50 alone: the best checkpoint is loaded at the end, so saves must fall on
        # evaluations; the other interval follows the one given (transformers refuses a fraction beside a count).
        for given_name, other in (("eval_steps", "save_steps"), ("save_steps", "eval_steps")):
            if given_name in given and other not in given:
                defaults[other] = getattr(parsed, given_name)
        return defaults
    needs_eval = [name for name in ("load_best_model_at_end", "metric_for_best_model", "eval_steps")
                  if name in given and getattr(parsed, name)]
    if "eval_strategy" in given and parsed.eval_strategy != "no":
        needs_eval.append("eval_strategy")
    if needs_eval:
        raise SystemExit(f"train_ctc.py: {', '.join('--' + n for n in needs_eval)} need(s) a dev split: give "
                         "--eval_split_name")
    return {**defaults, "eval_strategy": "no", "load_best_model_at_end": False, "metric_for_best_model": None,
            "greater_is_better": None}


def training_normalizer(args: Arguments, sources: list[str]) -> TextNormalizer:
    """The transcript normalisation of the run, from --text_normalization / --chars_to_ignore / --text_case."""
    if args.text_normalization not in ("auto", *STYLES):
        raise SystemExit(f"train_ctc.py: --text_normalization must be auto, librispeech or unicode, got "
                         f"{args.text_normalization!r}")
    options = args.chars_to_ignore is not None or args.text_case is not None
    style = args.text_normalization
    if style == "auto":
        librispeech = all(default_normalizer(source) == LIBRISPEECH for source in sources)
        style = "librispeech" if librispeech and not options else "unicode"
    if style == "librispeech" and options:
        raise SystemExit("train_ctc.py: --chars_to_ignore and --text_case apply to --text_normalization unicode; "
                         "the librispeech style is fixed")
    try:
        return TextNormalizer(style, chars_to_ignore=args.chars_to_ignore, case=args.text_case)
    except ValueError as error:
        raise SystemExit(f"train_ctc.py: {error}") from None


def check_run_options(args: Arguments, training_args: CTCTrainingArguments) -> str | None:
    """Checked before any work: counts that must be positive, and the output folder (another run in it is refused
    unless resumed or overwritten; resuming from an older checkpoint sets the later ones aside). Returns the
    checkpoint to resume from, or None."""
    max_steps = training_args.max_steps
    if max_steps is not None and (max_steps == 0 or max_steps < -1):
        raise ValueError(f"--max_steps must be a positive number of updates (or -1 with --num_train_epochs), got "
                         f"{max_steps}")
    if max_steps == -1 and training_args.num_train_epochs <= 0:
        raise ValueError(f"--num_train_epochs must be positive, got {training_args.num_train_epochs}")
    for name, value in (("max_tokens", args.max_tokens), ("max_consecutive_skips",
                                                         training_args.max_consecutive_skips)):
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be a positive integer, got {value}")
    requested = training_args.resume_from_checkpoint
    requested = "latest" if requested in ("latest", "true", "True") else requested
    output_dir = training_args.output_dir
    with training_args.main_process_first(local=False, desc="checking the output folder"):
        if training_args.process_index == 0:
            return check_output_dir(output_dir, marker=TRAINER_STATE_NAME, resume=requested,
                                    overwrite=training_args.overwrite_output_dir,
                                    model_files=[os.path.join(output_dir, name) for name in (
                                        "model.safetensors", "config.json", "eval_results.json")])
        return latest_checkpoint(output_dir, TRAINER_STATE_NAME) if requested == "latest" else requested


def main():
    start_run(logger)
    parser = HfArgumentParser((Arguments, CTCTrainingArguments))
    # Restart (same arguments) before the arguments become dataclasses: building TrainingArguments sets up the
    # device and torch.distributed, which the restarted process would then do a second time under the same pid.
    argv = sys.argv[1:]
    warn_renamed_options(argv, Arguments)
    parser.set_defaults(**check_options(argv))
    if parser.parse_args(argv).huge_pages:
        use_huge_pages()
    args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if "num_train_epochs" in given_options(argv):  # a run of that many epochs: the Trainer counts its updates
        training_args.max_steps = -1
    if training_args.fsdp and training_args.device.type == "cpu":
        # accelerate 1.15 enables FSDP only for accelerator devices: a CPU run would silently train with DDP.
        raise SystemExit("train_ctc.py: --fsdp needs GPUs (accelerate ignores FSDP on CPU and would use DDP); "
                         "leave --fsdp out on CPU")
    # --torch_compile compiles the model's graph-break-free stages (W2V2PreTrainedModel.compile_stages) instead of
    # the Trainer's torch.compile of the whole model, whose masking, gathers and CTC loss break the graph.
    compile_options = None
    if training_args.torch_compile:
        compile_options = {"backend": training_args.torch_compile_backend or "inductor",
                           "mode": training_args.torch_compile_mode}
        training_args.torch_compile = False
        training_args.torch_compile_backend = training_args.torch_compile_mode = None
    transformers.utils.logging.set_verbosity_warning()
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # per-eval notes on dynamic batch sizes
    resume = check_run_options(args, training_args)
    warn_if_emulated_bf16(logger, training_args.device.type, training_args.bf16)
    config = W2V2Config.from_pretrained(args.model_name_or_path)

    # 1. data: utterances with transcripts, normalised as the processor's (vocabulary, labels and references
    # alike: stored in its tokenizer config). Audio shorter than the receptive field (no frame) is skipped and logged.
    processor = None
    if args.processor_name_or_path:
        processor = Wav2Vec2Processor.from_pretrained(args.processor_name_or_path)
        normalizer = processor_normalizer(processor)
        set_processor_normalizer(processor, normalizer)  # saved with the model, guessed or not
    else:
        normalizer = training_normalizer(args, args.dataset_name)
    logger.info("transcripts: %s", normalizer.describe())
    min_samples = config.receptive_field
    data_options = dict(hub_config=args.dataset_config_name, audio_column=args.audio_column_name,
                        text_column=args.text_column_name, normalizer=normalizer, min_samples=min_samples)
    train = load_speech_dataset(args.dataset_name, split=args.train_split_name, min_duration_s=args.min_duration_s,
                                max_duration_s=args.max_duration_s, max_samples=args.max_train_samples,
                                **data_options)
    train_hours = sum(train["duration"]) / 3600
    recipe_name = choose_finetuning_recipe(args.recipe, config, train_hours)
    chosen = FINETUNING_RECIPES[recipe_name].fill_unset(args, training_args)  # what the command line left unset
    logger.info("recipe %s (%.2f h of training audio): %s", recipe_name, train_hours, chosen)
    eval_set = None
    if args.eval_split_name:
        eval_set = load_speech_dataset(args.eval_dataset_name or args.dataset_name, split=args.eval_split_name,
                                       max_samples=args.max_eval_samples, **data_options)

    # 2. processor: characters of the training transcripts, [PAD] = blank = 0, [UNK], "|" between words, and the
    # normalisation (saved with it in every checkpoint and in the output folder). Every transcript was normalised
    # once, at load: the vocabulary, the filter and the collator read it as it is.
    if processor is None:
        processor = build_processor(build_vocabulary(train["text"], normalizer=None), normalizer=normalizer,
                                    feat_extract_norm=config.feat_extract_norm)
    tokenizer = processor.tokenizer
    logger.info("vocabulary (%d): %s", len(tokenizer), "".join(tokenizer.convert_ids_to_tokens(range(len(tokenizer)))))

    # 3. model: pretrained encoder + a new CTC head, with the fine-tuning overrides of the recipe. Seeded first: the
    # new head's initial weights come from the global RNG (the Trainer seeds only after the model exists).
    set_seed(training_args.seed)
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
    if compile_options is not None:
        model.compile_stages(**compile_options)
        logger.info("torch.compile of the feature encoder, projection and Transformer blocks: %s", compile_options)
    if training_args.max_steps > 0 and args.freeze_finetune_updates >= training_args.max_steps:
        logger.warning("freeze_finetune_updates (%d) >= max_steps (%d): only the CTC head will train",
                       args.freeze_finetune_updates, training_args.max_steps)

    # 4. drop what CTC cannot learn from (empty transcripts, audio too short for its labels), reported
    report = CTCReport()
    train = filter_ctc_dataset(train, processor, model.num_frames, report, text_normalized=True)
    if eval_set is not None:
        eval_set = filter_ctc_dataset(eval_set, processor, model.num_frames, report,
                                      text_normalized=True)
    if report.dropped or report.unknown_characters:
        logger.warning("dropped before training: %s; characters mapped to [UNK]: %s", dict(report.dropped),
                       dict(report.unknown_characters))
    logger.info("train: %d utterances, %.2f h; eval: %s utterances", len(train), sum(train["duration"]) / 3600,
                len(eval_set) if eval_set is not None else "no")
    for name, split, rows in (("training", args.train_split_name, train), ("eval", args.eval_split_name, eval_set)):
        if rows is not None and len(rows) == 0:
            raise ValueError(f"no usable {name} utterance in {args.dataset_name} (split {split}): every file was "
                             f"unreadable, outside the duration limits, or without a usable transcript (see the log)")

    # 5. train; the encoder stays frozen for the whole run (FreezeFinetuneCallback), so its frames can be cached
    cache = FeatureCache(max_bytes=int(args.feature_cache_gb * 2**30)) if args.feature_cache_gb > 0 else None
    trainer = CTCTrainer(
        model=model, args=training_args, train_dataset=AudioDataset(train, min_samples=min_samples),
        eval_dataset=AudioDataset(eval_set, min_samples=min_samples) if eval_set is not None else None,
        data_collator=CTCCollator(processor, model.num_frames, min_samples=min_samples, return_ids=cache is not None,
                                  text_normalized=True),
        processing_class=processor, max_tokens=args.max_tokens,
        max_consecutive_skips=training_args.max_consecutive_skips, feature_cache=cache,
        batch_record=args.batch_record,
    )
    result = trainer.train(resume_from_checkpoint=resume)  # TrainingStopped: no final model from bad weights
    if cache is not None:
        logger.info("feature cache: %d utterances, %.0f MB; %d hits, %d misses", len(cache), cache.stored_bytes / 2**20,
                    cache.hits, cache.misses)
    trainer.log_metrics("train", result.metrics)

    # 6. evaluate (the best-WER checkpoint when load_best_model_at_end) and save model + processor
    results = {}
    if eval_set is not None:
        results[args.eval_split_name] = trainer.evaluate(metric_key_prefix="eval")
    if args.test_split_name:
        test = load_speech_dataset(args.eval_dataset_name or args.dataset_name, split=args.test_split_name,
                                   max_samples=args.max_eval_samples, **data_options)
        test = filter_ctc_dataset(test, processor, model.num_frames, report, text_normalized=True)
        results[args.test_split_name] = trainer.evaluate(AudioDataset(test, min_samples=min_samples),
                                                    metric_key_prefix="test")
    if trainer.is_world_process_zero():
        # model + config + our modeling code with auto_map + processor + model card: a complete Hub folder
        card = finetuned_model_card_info(args, training_args, recipe_name, chosen, train_hours, results,
                                         log_history=trainer.state.log_history, normalization=normalizer.describe())
        save_hub_folder(trainer.model, processor, training_args.output_dir, card=build_model_card(card, trainer.model))
        with open(os.path.join(training_args.output_dir, "eval_results.json"), "w") as handle:
            json.dump({"recipe": recipe_name, "results": results, "log_history": trainer.state.log_history},
                      handle, indent=1)
        for split, metrics in results.items():
            prefix = "eval" if split == args.eval_split_name else "test"
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
