"""Self-supervised wav2vec 2.0 pretraining (Baevski et al., 2020), on one CPU or many GPUs and nodes.

Usage:
    # the default corpus (make corpus), tiny model, CPU
    python train_pretrain.py --dataset_name data/default_corpus/LibriSpeech --train_split_name train-clean \
        --eval_split_name dev-clean --config tiny --output_dir runs/pretrain-tiny --max_steps 1500

    # LibriSpeech 960 h, BASE, 8 GPUs (or any Accelerate config: multi-node, FSDP, bf16)
    accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 train_pretrain.py \
        --dataset_name /data/LibriSpeech --train_split_name train-clean-100+train-clean-360+train-other-500 \
        --eval_split_name dev-clean --config base --output_dir runs/base --max_steps 400000

    # two CPU processes (gloo); each takes every second batch, so this equals one process with
    # --gradient_accumulation_steps 2 (same utterances, masks, negatives and Gumbel noise per update)
    torchrun --nproc_per_node 2 train_pretrain.py ...
    accelerate launch --multi_gpu --num_processes 2 train_pretrain.py ...   # the same through Accelerate

    # FSDP (GPUs only; untested, no GPU so far): the final folder is written from the gathered full state dict
    accelerate launch --use_fsdp --num_processes 8 train_pretrain.py ...

    # continue where a run stopped (model, optimizer, LR schedule, RNG, Gumbel temperature, data position)
    python train_pretrain.py ... --resume_from_checkpoint latest

Robustness: an output folder that holds another run is refused unless resumed or ``--overwrite_output_dir``;
resuming from an older checkpoint moves the later ones into ``checkpoints/superseded-<time>/`` (nothing is deleted
but this run's own checkpoints beyond ``--save_total_limit``). Checkpoints are written to ``partial-<step>`` and
renamed when complete; the training state is JSON (``training_state.json``) and Accelerate loads the tensors with
``weights_only=True``, so a checkpoint never runs code. An update with a non-finite loss or gradient is skipped
(weights and Adam untouched; it keeps its slot of ``--max_steps`` and its LR step); batches without usable audio
are no update at all; ``--max_consecutive_skips`` skipped updates in a row stop the run with an error, without
writing a final model.

The output folder ends as a complete Hub folder (``hf_wav2vec2.hub.save_hub_folder``) that ``W2V2ForCTC`` loads for
fine-tuning: model.safetensors, config.json with ``auto_map``, our modeling code, preprocessor_config.json (the
feature extractor), a model card (README.md: data, hours, updates, recipe, final validation figures, how to
fine-tune, limitations; rewritten at the end of every run) and train_history.json; besides them
``checkpoints/checkpoint-<step>`` Accelerate states and TensorBoard logs under ``logs/``. ``--push_to_hub`` (with
``--hub_model_id``, ``--hub_token``, ``--hub_private_repo``) uploads the folder without the checkpoints.

On Linux with glibc the script first restarts itself once with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (large CPU
buffers on transparent huge pages, see ``hf_wav2vec2.training.allocator``); ``--huge_pages false`` turns that off.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from hf_wav2vec2 import W2V2Config, W2V2ForPreTraining
from hf_wav2vec2.cli.card_info import pretraining_model_card_info
from hf_wav2vec2.cli.cards import build_model_card
from hf_wav2vec2.cli.common import DataArguments, start_run, warn_if_emulated_bf16, warn_renamed_options
from hf_wav2vec2.data import AudioDataset, MaxTokensBatchSampler, PretrainingCollator, load_speech_dataset
from hf_wav2vec2.data.ctc import build_feature_extractor
from hf_wav2vec2.hub import PRETRAINING_PUSH_IGNORE, push_hub_folder, save_hub_folder
from hf_wav2vec2.training import adamw, choose_pretraining_recipe, polynomial_decay_lr_lambda
from hf_wav2vec2.training.allocator import use_huge_pages
from hf_wav2vec2.training.checkpoints import check_output_dir
from hf_wav2vec2.training.pretraining import (
    STATE_FILE,
    PretrainingState,
    load_checkpoint,
    new_run_id,
    pretraining_update,
    save_checkpoint,
    validate,
)

logger = logging.getLogger("train_pretrain")


@dataclass(kw_only=True)
class Arguments(DataArguments):
    """The script's own options; the data's are :class:`DataArguments`."""

    output_dir: str = field(metadata={"help": "where the model, checkpoints and logs go"})
    config: str = field(default="tiny", metadata={"help": "preset (base, large_lv60, tiny) or a config.json path"})
    max_steps: int = field(default=1000, metadata={"help": "optimizer updates"})
    learning_rate: float | None = field(default=None, metadata={"help": "peak LR; default: the preset's recipe"})
    warmup_ratio: float = field(default=0.08, metadata={"help": "linear warm-up share, then linear decay to 0 (the "
                                                                "paper's 32k of 400k updates)"})
    gumbel_schedule: str = field(default="proportional", metadata={
        "help": "proportional: the Gumbel temperature decay stretched to --max_steps, so that it reaches its floor at"
                " the same fraction of the run as the paper's 400k-update run (69%%), exactly the paper's values at "
                "400k updates; paper: 0.999995 per update whatever the run length (a short run stays near 2)"})
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-6
    weight_decay: float = 0.01
    max_tokens: int | None = field(default=None, metadata={"help": "audio samples per device and micro-batch; "
                                                                   "default: the preset's recipe"})
    max_sample_size: int = field(default=250_000, metadata={"help": "crop longer utterances (15.6 s)"})
    min_duration_s: float = field(default=2.0, metadata={"help": "drop shorter utterances (fairseq min_sample_size)"})
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = field(default=10.0, metadata={"help": "clip the global gradient norm (0: no clipping)"})
    gradient_checkpointing: bool = False
    torch_compile: bool = field(default=False, metadata={
        "help": "torch.compile the stages that trace as whole graphs (feature encoder, projection, Transformer "
                "blocks: W2V2PreTrainedModel.compile_stages); masking, the quantizer and the losses stay eager. Off by "
                "default: on CPU it was not faster (README, Benchmarks)"})
    torch_compile_backend: str | None = field(default=None, metadata={"help": "torch.compile backend (default: "
                                                                             "inductor); implies --torch_compile"})
    torch_compile_mode: str | None = field(default=None, metadata={"help": "torch.compile mode (e.g. "
                                                                          "max-autotune); implies --torch_compile"})
    save_steps: int = field(default=500, metadata={"help": "save an Accelerate checkpoint every N updates"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept"})
    eval_steps: int = 250
    logging_steps: int = 10
    seed: int = 0
    num_workers: int = 2
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "a checkpoint folder or 'latest'"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "delete the checkpoints and model of a "
                                                                        "previous run in --output_dir first"})
    max_consecutive_skips: int = field(default=10, metadata={"help": "stop when this many updates in a row are "
                                                                     "skipped (non-finite loss or gradient, or no "
                                                                     "usable audio)"})
    huge_pages: bool = field(default=True, metadata={"help": "restart once with GLIBC_TUNABLES=glibc.malloc.hugetlb=1"
                                                             " (large CPU buffers on transparent huge pages: CPU steps "
                                                             "otherwise spend as long in page faults as in the model);"
                                                             " --huge_pages false turns it off"})
    push_to_hub: bool = field(default=False, metadata={"help": "upload the output folder (model, code, feature "
                                                               "extractor, model card; no checkpoints) at the end"})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo (me/w2v2-base); default: the name of "
                                                                     "--output_dir"})
    hub_token: str | None = field(default=None, metadata={"help": "Hub token; default: the saved login"})
    hub_private_repo: bool | None = field(default=None, metadata={"help": "create the repo private (if it is new)"})


def build_config(name: str) -> W2V2Config:
    if os.path.exists(name):
        return W2V2Config.from_pretrained(name)
    return W2V2Config.from_preset(name)


def check_arguments(args: Arguments) -> None:
    """Counts that must be positive, checked before any work."""
    for name in ("max_steps", "save_steps", "eval_steps", "logging_steps", "gradient_accumulation_steps",
                 "save_total_limit", "max_consecutive_skips", "max_sample_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.gumbel_schedule not in ("proportional", "paper"):
        raise ValueError(f"--gumbel_schedule must be proportional or paper, got {args.gumbel_schedule!r}")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise ValueError(f"--max_tokens must be a positive number of samples, got {args.max_tokens}")


def main():
    start_run(logger)
    argv = sys.argv[1:]
    warn_renamed_options(argv, Arguments)
    (args,) = HfArgumentParser(Arguments).parse_args_into_dataclasses(args=argv)
    check_arguments(args)
    if args.huge_pages:
        use_huge_pages()  # re-executes this script once, same arguments
    config = build_config(args.config)
    recipe = choose_pretraining_recipe(args.config, config)
    learning_rate = args.learning_rate or recipe.learning_rate
    max_tokens = args.max_tokens or recipe.max_tokens

    # LayerDrop leaves some parameters without gradient in an update; DDP must be told. The LR schedule steps once
    # per update, whatever the process count and fp16 overflows (pretraining_update steps it).
    accelerator = Accelerator(
        log_with="tensorboard", project_dir=args.output_dir, step_scheduler_with_optimizer=False,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=config.layerdrop > 0)],
    )
    set_seed(args.seed)
    warn_if_emulated_bf16(logger, accelerator.device.type, accelerator.mixed_precision == "bf16")
    os.makedirs(args.output_dir, exist_ok=True)
    checkpoints = os.path.join(args.output_dir, "checkpoints")
    # Before any work: a folder holding another run is refused unless resumed or overwritten; resuming from an
    # older checkpoint sets its later ones aside, so that this run's saves never collide with them.
    resume = None
    if accelerator.is_main_process:
        resume = check_output_dir(checkpoints, marker=STATE_FILE, resume=args.resume_from_checkpoint,
                                  overwrite=args.overwrite_output_dir,
                                  model_files=[os.path.join(args.output_dir, n) for n in (
                                      "model.safetensors", "config.json", "train_history.json")])
    resume = broadcast_object_list([resume])[0] if accelerator.num_processes > 1 else resume

    # 1. data: utterances by total audio per batch, long ones cropped, bad files and audio shorter than the
    # receptive field (no frame) skipped and logged
    min_samples = config.receptive_field
    data_options = dict(hub_config=args.dataset_config_name, audio_column=args.audio_column_name,
                        min_samples=min_samples)
    train = load_speech_dataset(args.dataset_name, split=args.train_split_name, min_duration_s=args.min_duration_s,
                                max_samples=args.max_train_samples, **data_options)
    # The batch count is made a multiple of the micro-batches per update (processes x accumulation): every process
    # gets as many batches, none is repeated to even the shards, and N processes draw the batches that one process
    # accumulating N micro-batches draws.
    sampler = MaxTokensBatchSampler(train["num_samples"], max_tokens, max_sample_size=args.max_sample_size,
                                    seed=args.seed,
                                    num_batches_multiple=accelerator.num_processes * args.gradient_accumulation_steps)
    normalize = config.feat_extract_norm == "layer"  # fairseq normalises the input of layer-norm models
    collator = PretrainingCollator(args.max_sample_size, normalize=normalize, seed=args.seed, min_samples=min_samples)
    # Own generators: starting a DataLoader iterator draws a seed, which must not move the global RNG that dropout
    # uses (a resumed run starts its iterator at another point of the stream).
    train_loader = DataLoader(AudioDataset(train, min_samples=min_samples), batch_sampler=sampler, collate_fn=collator,
                              num_workers=args.num_workers, generator=torch.Generator().manual_seed(args.seed))
    dev_loader = None
    if args.eval_split_name:
        dev = load_speech_dataset(args.eval_dataset_name or args.dataset_name, split=args.eval_split_name,
                                  max_samples=args.max_eval_samples, **data_options)
        dev_sampler = MaxTokensBatchSampler(dev["num_samples"], max_tokens, max_sample_size=args.max_sample_size,
                                            shuffle=False, num_batches_multiple=accelerator.num_processes)
        dev_loader = DataLoader(AudioDataset(dev, min_samples=min_samples), batch_sampler=dev_sampler,
                                collate_fn=PretrainingCollator(args.max_sample_size, normalize=normalize,
                                                               min_samples=min_samples),
                                num_workers=args.num_workers, generator=torch.Generator().manual_seed(args.seed))
    logger.info("train: %d utterances, %.1f h, %d batches per epoch", len(train), sum(train["duration"]) / 3600,
                len(sampler))
    if len(sampler) == 0:
        raise ValueError(f"no usable training audio in {args.dataset_name} (split {args.train_split_name}): every "
                         f"file was unreadable or shorter than --min_duration_s {args.min_duration_s} / one frame (see "
                         "the log above)")

    # 2. model
    model = W2V2ForPreTraining(config)
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    if args.torch_compile or args.torch_compile_backend or args.torch_compile_mode:
        model.compile_stages(backend=args.torch_compile_backend or "inductor", mode=args.torch_compile_mode)

    # 3. optimisation: Adam (0.9, 0.98), eps 1e-6, decoupled weight decay 0.01, warm-up then linear decay
    optimizer = adamw(model, learning_rate, (args.adam_beta1, args.adam_beta2), args.adam_epsilon, args.weight_decay)
    schedule = polynomial_decay_lr_lambda(int(args.warmup_ratio * args.max_steps), args.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    if dev_loader is not None:
        dev_loader = accelerator.prepare(dev_loader)
    state = PretrainingState(run_id=new_run_id())
    if resume:
        load_checkpoint(accelerator, resume, state)  # JSON state; tensors loaded with weights_only=True
        logger.info("resumed from %s at update %d (epoch %d, batch %d)", resume, state.step, state.epoch,
                    state.batches_in_epoch)
    accelerator.init_trackers("logs", config={k: v for k, v in vars(args).items() if not isinstance(v, list)})

    # 4. loop: updates of gradient_accumulation_steps micro-batches, epochs as needed
    progress = tqdm(total=args.max_steps, initial=state.step, disable=not accelerator.is_main_process,
                    desc="pretraining")

    def batches():
        while True:
            # Through the prepared loader: Accelerate's DataLoaderShard re-sets its sampler's epoch from its own
            # counter when an iterator starts, which would replay epoch 0's order after a resume.
            train_loader.set_epoch(state.epoch)
            sampler.set_epoch(state.epoch)
            collator.set_epoch(state.epoch)
            loader = accelerator.skip_first_batches(train_loader, state.batches_in_epoch) \
                if state.batches_in_epoch else train_loader
            for batch in loader:
                state.batches_in_epoch += 1
                yield batch
            state.epoch += 1
            state.batches_in_epoch = 0

    metrics, val = {}, {}  # the last update's and the last validation's figures, for the model card
    stream = batches()
    window_start = time.perf_counter()
    gumbel_run_steps = args.max_steps if args.gumbel_schedule == "proportional" else None
    while state.step < args.max_steps:
        micro = [next(stream) for _ in range(args.gradient_accumulation_steps)]
        update = pretraining_update(accelerator, model, optimizer, scheduler, micro, state, seed=args.seed,
                                    max_grad_norm=args.max_grad_norm, max_consecutive_skips=args.max_consecutive_skips,
                                    gumbel_run_steps=gumbel_run_steps)
        if update is None:  # no usable audio in these batches: not an update, draw the next ones
            continue
        metrics = update
        progress.update(1)
        if state.step % args.logging_steps == 0 or state.step == args.max_steps:
            elapsed = time.perf_counter() - window_start
            metrics["audio_s_per_s"] = metrics["audio_s"] * args.logging_steps / max(elapsed, 1e-9)
            window_start = time.perf_counter()
            accelerator.log(metrics, step=state.step)
            progress.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['accuracy']:.3f}",
                                 ppl=f"{metrics['code_perplexity']:.0f}")
            if accelerator.is_main_process:
                progress.write(json.dumps({"step": state.step, **{k: round(v, 4) for k, v in metrics.items()}}))
        if dev_loader is not None and (state.step % args.eval_steps == 0 or state.step == args.max_steps):
            val = validate(accelerator, model, dev_loader, seed=args.seed)
            accelerator.log(val, step=state.step)
            if accelerator.is_main_process:
                progress.write(json.dumps({"step": state.step, **{k: round(v, 4) for k, v in val.items()}}))
        if state.step % args.save_steps == 0 or state.step == args.max_steps:
            save_checkpoint(accelerator, checkpoints, state, args.save_total_limit)

    # 5. save: a complete Hub folder (weights, config with auto_map, our modeling code, feature extractor, model
    # card) that W2V2ForCTC.from_pretrained takes for fine-tuning; written at the end of every run, pushed on request.
    # The weights go through Accelerate's state-dict API, which every process must call: under FSDP it gathers the
    # shards (the unwrapped module holds only this process's shard), elsewhere it is the plain state dict.
    accelerator.wait_for_everyone()
    full_state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        history_path = os.path.join(args.output_dir, "train_history.json")
        previous = {}
        if os.path.exists(history_path):  # a run resumed at max_steps measures nothing: keep the last figures
            with open(history_path) as f:
                previous = json.load(f)
        record = {"history": state.history, "skipped_updates": state.skipped_updates,
                  "seen_audio_h": state.seen_audio_s / 3600, "updates": state.step,
                  "train_hours": sum(train["duration"]) / 3600, "learning_rate": learning_rate,
                  "max_tokens": max_tokens, "processes": accelerator.num_processes,
                  "mixed_precision": accelerator.mixed_precision,
                  "last_update": metrics or previous.get("last_update", {}),
                  "last_validation": val or previous.get("last_validation", {})}
        with open(history_path, "w") as f:
            json.dump(record, f)
        unwrapped = accelerator.unwrap_model(model)
        card = build_model_card(pretraining_model_card_info(args, record, unwrapped.config), unwrapped)
        save_hub_folder(unwrapped, build_feature_extractor(normalize), args.output_dir, card=card,
                        state_dict=full_state_dict)
        logger.info("model and model card saved to %s (%d updates, %d skipped)", args.output_dir, state.step,
                    state.skipped_updates)
        if args.push_to_hub:
            repo_id = args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))
            push_hub_folder(args.output_dir, repo_id, token=args.hub_token, private=args.hub_private_repo,
                            commit_message="Upload wav2vec 2.0 pretrained model",
                            ignore_patterns=PRETRAINING_PUSH_IGNORE)
    accelerator.wait_for_everyone()  # tearing the group down while the main process still saves can hang at exit
    accelerator.end_training()


if __name__ == "__main__":
    main()
