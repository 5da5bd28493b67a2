"""What the programs share: the dataset options of the two training scripts (:class:`DataArguments`, named as in the
transformers examples), the warning for the options' earlier names, and the start of every run (processes on a
machine without GPU, logging, the emulated-bf16 warning)."""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from dataclasses import dataclass, field

import torch

from ..training.precision import emulated_bf16_warning

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Version from which the earlier option names (``--dataset``, ``--split``, ...) stop working.
OLD_NAMES_REMOVED_IN = "0.2"


@dataclass
class DataArguments:
    """The data of a training run, as the transformers examples name it (``run_speech_recognition_ctc.py``). The
    earlier names stay as aliases that warn (``--dataset``, ``--hub_config``, ``--split``, ``--dev_dataset``,
    ``--eval_dataset``, ``--dev_split``, ``--eval_split``) until version 0.2."""

    dataset_name: list[str] = field(metadata={
        "aliases": ["--dataset"], "help": "Hub dataset name(s), local folder(s) datasets.load_dataset reads "
        "(audiofolder with metadata.csv, Hub-layout parquet, save_to_disk), or local LibriSpeech / Libri-light / "
        "audio folder(s) (formerly --dataset)"})
    dataset_config_name: str | None = field(default=None, metadata={
        "aliases": ["--hub_config"], "help": "datasets configuration: Common Voice's language (fr), librispeech_asr's"
        " clean (formerly --hub_config)"})
    train_split_name: str | None = field(default=None, metadata={
        "aliases": ["--split"], "help": "training split(s): train, train+validation, "
        "train-clean-100+train-other-500, or a Libri-light subset 10min / 1h / 10h (formerly --split)"})
    eval_dataset_name: list[str] | None = field(default=None, metadata={
        "aliases": ["--dev_dataset", "--eval_dataset"],
        "help": "dev source(s); default: --dataset_name (formerly --dev_dataset / --eval_dataset)"})
    eval_split_name: str | None = field(default=None, metadata={
        "aliases": ["--dev_split", "--eval_split"], "help": "dev split: validation during training (formerly "
        "--dev_split / --eval_split)"})
    audio_column_name: str = field(default="audio", metadata={"help": "audio column of a datasets source"})
    max_train_samples: int | None = field(default=None, metadata={"help": "use only the first N training "
                                                                          "utterances"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "use only the first N dev/test utterances"})
    language: list[str] | None = field(default=None, metadata={
        "help": "ISO 639 code(s) of the speech, for the model card (fr; several for multilingual data); default: en "
        "for LibriSpeech / Libri-light / the synthetic corpus, else not stated"})


def warn_renamed_options(argv: list[str], *dataclass_types) -> None:
    """A FutureWarning for each earlier option name (a field's ``aliases``) written in ``argv``, naming the new one.
    The old names keep working until version :data:`OLD_NAMES_REMOVED_IN`."""
    written = {item.split("=", 1)[0] for item in argv if item.startswith("--")}
    for cls in dataclass_types:
        for f in dataclasses.fields(cls):
            for alias in f.metadata.get("aliases", ()):
                if alias in written:
                    warnings.warn(f"--{alias[2:]} is now --{f.name}; the old name stops working in version "
                                  f"{OLD_NAMES_REMOVED_IN}", FutureWarning, stacklevel=2)


def is_main_process() -> bool:
    """Rank 0 of a torchrun / accelerate launch, or a single process (read from the launcher's environment, before
    torch.distributed starts)."""
    return int(os.environ.get("RANK", "0")) == 0


def start_run(logger: logging.Logger, *, processes: bool = True) -> None:
    """The start of every program: logging (INFO on the main process, warnings only on the other ranks, so that N
    processes do not print every line N times) and, with ``processes``, CPU processes for torchrun / accelerate
    launch on a machine without GPU (without ``ACCELERATE_USE_CPU`` every process would train alone, as the main
    process, and they would collide in the output folder)."""
    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO if is_main_process() else logging.WARNING)
    if processes and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def warn_if_emulated_bf16(logger: logging.Logger, device_type: str, bf16: bool) -> None:
    """Log :func:`~hf_wav2vec2.training.precision.emulated_bf16_warning` when it applies."""
    if (warning := emulated_bf16_warning(device_type, bf16)) is not None:
        logger.warning(warning)
