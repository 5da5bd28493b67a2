"""Self-supervised wav2vec 2.0 pretraining (Baevski et al., 2020), on one CPU or many GPUs and nodes.

Usage:
    # the default corpus (make corpus), tiny model, CPU
    python train_pretrain.py --dataset data/default_corpus/LibriSpeech --split train-clean \
        --dev_split dev-clean --config tiny --output_dir runs/pretrain-tiny --max_steps 1500

    # LibriSpeech 960 h, BASE, 8 GPUs (or any Accelerate config: multi-node, FSDP, bf16)
    accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 train_pretrain.py \
        --dataset /data/LibriSpeech --split train-clean-100+train-clean-360+train-other-500 \
        --dev_split dev-clean --config base --output_dir runs/base --max_steps 400000

    # two CPU processes (gloo)
    torchrun --nproc_per_node 2 train_pretrain.py ...

    # continue where a run stopped (model, optimizer, LR schedule, RNG, Gumbel temperature, data position)
    python train_pretrain.py ... --resume_from_checkpoint latest

The output folder ends with a ``save_pretrained`` model (safetensors + config.json) that ``W2V2ForCTC`` loads for
fine-tuning, ``checkpoints/checkpoint-<step>`` Accelerate states, and TensorBoard logs under ``logs/``.

On Linux with glibc the script first restarts itself once with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (large CPU
buffers on transparent huge pages, see ``hf_wav2vec2.training.allocator``); ``--huge_pages false`` turns that off.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from hf_wav2vec2 import W2V2Config, W2V2ForPreTraining
from hf_wav2vec2.data import AudioDataset, MaxTokensBatchSampler, PretrainingCollator, load_speech_dataset
from hf_wav2vec2.training import choose_pretraining_recipe, parameter_groups, polynomial_decay_lr_lambda
from hf_wav2vec2.training.allocator import use_huge_pages
from hf_wav2vec2.training.pretraining import (
    PretrainingState,
    latest_checkpoint,
    pretraining_update,
    save_checkpoint,
    validate,
)

logger = logging.getLogger("train_pretrain")


@dataclass
class Arguments:
    dataset: list[str] = field(metadata={"help": "Hub dataset name(s) or local LibriSpeech / Libri-light / audio "
                                                 "folder(s)"})
    output_dir: str = field(metadata={"help": "where the model, checkpoints and logs go"})
    split: str | None = field(default=None, metadata={"help": "training split(s): train-clean-100+train-other-500"})
    dev_dataset: list[str] | None = field(default=None, metadata={"help": "dev source(s); default: --dataset"})
    dev_split: str | None = field(default=None, metadata={"help": "dev split for the validation loss"})
    config: str = field(default="tiny", metadata={"help": "preset (base, large_lv60, tiny) or a config.json path"})
    max_steps: int = field(default=1000, metadata={"help": "optimizer updates"})
    learning_rate: float | None = field(default=None, metadata={"help": "peak LR; default: the preset's recipe"})
    warmup_ratio: float = field(default=0.08, metadata={"help": "linear warm-up share, then linear decay to 0"})
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
    save_steps: int = field(default=500, metadata={"help": "save an Accelerate checkpoint every N updates"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept"})
    eval_steps: int = 250
    logging_steps: int = 10
    seed: int = 0
    num_workers: int = 2
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "a checkpoint folder or 'latest'"})
    huge_pages: bool = field(default=True, metadata={"help": "restart once with GLIBC_TUNABLES=glibc.malloc.hugetlb=1"
                                                             " (large CPU buffers on transparent huge pages: CPU steps "
                                                             "otherwise spend as long in page faults as in the model);"
                                                             " --huge_pages false turns it off"})


def build_config(name: str) -> W2V2Config:
    if os.path.exists(name):
        return W2V2Config.from_pretrained(name)
    return W2V2Config.from_preset(name)


def main():
    (args,) = HfArgumentParser(Arguments).parse_args_into_dataclasses()
    if args.huge_pages:
        use_huge_pages()  # re-executes this script once, same arguments
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    config = build_config(args.config)
    recipe = choose_pretraining_recipe(args.config)
    learning_rate = args.learning_rate or recipe.learning_rate
    max_tokens = args.max_tokens or recipe.max_tokens

    # LayerDrop leaves some parameters without gradient in an update; DDP must be told.
    accelerator = Accelerator(
        log_with="tensorboard", project_dir=args.output_dir,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=config.layerdrop > 0)],
    )
    set_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    checkpoints = os.path.join(args.output_dir, "checkpoints")

    # 1. data: utterances by total audio per batch, long ones cropped, bad files and audio shorter than the
    # receptive field (no frame) skipped and logged
    min_samples = config.receptive_field
    train = load_speech_dataset(args.dataset, split=args.split, min_duration_s=args.min_duration_s,
                                min_samples=min_samples)
    sampler = MaxTokensBatchSampler(train["num_samples"], max_tokens, max_sample_size=args.max_sample_size,
                                    seed=args.seed)
    normalize = config.feat_extract_norm == "layer"  # fairseq normalises the input of layer-norm models
    collator = PretrainingCollator(args.max_sample_size, normalize=normalize, seed=args.seed, min_samples=min_samples)
    # Own generators: starting a DataLoader iterator draws a seed, which must not move the global RNG that the
    # Gumbel noise and dropout use (a resumed run starts its iterator at another point of the stream).
    train_loader = DataLoader(AudioDataset(train, min_samples=min_samples), batch_sampler=sampler, collate_fn=collator,
                              num_workers=args.num_workers, generator=torch.Generator().manual_seed(args.seed))
    dev_loader = None
    if args.dev_split:
        dev = load_speech_dataset(args.dev_dataset or args.dataset, split=args.dev_split, min_samples=min_samples)
        dev_sampler = MaxTokensBatchSampler(dev["num_samples"], max_tokens, max_sample_size=args.max_sample_size,
                                            shuffle=False)
        dev_loader = DataLoader(AudioDataset(dev, min_samples=min_samples), batch_sampler=dev_sampler,
                                collate_fn=PretrainingCollator(args.max_sample_size, normalize=normalize,
                                                               min_samples=min_samples),
                                num_workers=args.num_workers, generator=torch.Generator().manual_seed(args.seed))
    logger.info("train: %d utterances, %.1f h, %d batches per epoch", len(train), sum(train["duration"]) / 3600,
                len(sampler))

    # 2. model
    model = W2V2ForPreTraining(config)
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable()

    # 3. optimisation: Adam (0.9, 0.98), eps 1e-6, decoupled weight decay 0.01, warm-up then linear decay
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=learning_rate,
                                  betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    schedule = polynomial_decay_lr_lambda(int(args.warmup_ratio * args.max_steps), args.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    if dev_loader is not None:
        dev_loader = accelerator.prepare(dev_loader)
    state = PretrainingState()
    accelerator.register_for_checkpointing(state)

    resume = args.resume_from_checkpoint
    if resume == "latest":
        resume = latest_checkpoint(checkpoints)
        if resume is None:
            logger.info("no checkpoint in %s: starting from scratch", checkpoints)
    if resume:
        accelerator.load_state(resume)
        logger.info("resumed from %s at update %d (epoch %d, batch %d)", resume, state.step, state.epoch,
                    state.batches_in_epoch)
    accelerator.init_trackers("logs", config={k: v for k, v in vars(args).items() if not isinstance(v, list)})

    # 4. loop: updates of gradient_accumulation_steps micro-batches, epochs as needed
    progress = tqdm(total=args.max_steps, initial=state.step, disable=not accelerator.is_main_process,
                    desc="pretraining")

    def batches():
        while True:
            sampler.set_epoch(state.epoch)
            collator.set_epoch(state.epoch)
            loader = accelerator.skip_first_batches(train_loader, state.batches_in_epoch) \
                if state.batches_in_epoch else train_loader
            for batch in loader:
                state.batches_in_epoch += 1
                yield batch
            state.epoch += 1
            state.batches_in_epoch = 0

    stream = batches()
    window_start = time.perf_counter()
    while state.step < args.max_steps:
        micro = [next(stream) for _ in range(args.gradient_accumulation_steps)]
        metrics = pretraining_update(accelerator, model, optimizer, scheduler, micro, state, seed=args.seed,
                                     max_grad_norm=args.max_grad_norm)
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
            save_checkpoint(accelerator, checkpoints, state.step, args.save_total_limit)

    # 5. save: a folder W2V2ForCTC.from_pretrained takes for fine-tuning
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(args.output_dir)
        with open(os.path.join(args.output_dir, "train_history.json"), "w") as f:
            json.dump({"history": state.history, "skipped_updates": state.skipped_updates,
                       "seen_audio_h": state.seen_audio_s / 3600}, f)
        logger.info("model saved to %s (%d updates, %d skipped)", args.output_dir, state.step, state.skipped_updates)
    accelerator.wait_for_everyone()  # tearing the group down while the main process still saves can hang at exit
    accelerator.end_training()


if __name__ == "__main__":
    main()
