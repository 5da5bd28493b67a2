"""Labelled subsets of a training split in the Libri-light manner, for low-resource fine-tuning (paper section 4.3).

Libri-light's fine-tuning sets (``librispeech_finetuning/``) hold six disjoint 10-minute folds ``1h/0`` .. ``1h/5``
(``10min`` is fold 0, ``1h`` all six) plus ``9h`` (the rest of ``10h``). :func:`write_finetuning_subsets` writes the
same layout from any LibriSpeech-layout split folder: each fold takes utterances from every speaker in turn (a seeded
shuffle per speaker), until it holds ``fold_minutes`` of audio, so the folds are disjoint, speaker-balanced and
nested the way Libri-light's are. Audio files are linked (hard link, else symbolic link, else copied), transcripts
are written per chapter, so ``load_speech_dataset(OUT/librispeech_finetuning, split="10min" | "1h")`` reads them.
Only the given split is read: dev and test utterances can never end up in a labelled subset.

Usage:
    python -m hf_wav2vec2.corpus.subsets --split_dir data/corpus/LibriSpeech/train-clean --output_dir data/corpus
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..data import load_speech_dataset

FOLDS = 6  # Libri-light's 1h set: six 10-minute folds


def _link(source: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    for link in (os.link, os.symlink):
        try:
            link(os.path.abspath(source), target)
            return
        except OSError:
            continue
    shutil.copyfile(source, target)


def choose_folds(rows: list[dict], *, fold_minutes: float = 10.0, num_folds: int = FOLDS,
                 seed: int = 0) -> list[list[dict]]:
    """Split rows (``id``, ``speaker_id``, ``duration``) into ``num_folds`` disjoint folds of at least
    ``fold_minutes`` each, taking one utterance from each speaker in turn. Raises if the rows hold too little audio."""
    needed = num_folds * fold_minutes * 60
    total = sum(row["duration"] for row in rows)
    if total < needed:
        raise ValueError(f"{num_folds} folds of {fold_minutes} min need {needed / 60:.1f} min of audio, the split has "
                         f"{total / 60:.1f} min: synthesise a larger corpus (--utterances_per_split)")
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, list[dict]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["id"]):
        by_speaker[row["speaker_id"]].append(row)
    queues = [[group[i] for i in rng.permutation(len(group))] for _, group in sorted(by_speaker.items())]
    folds: list[list[dict]] = []
    turn = 0
    for _ in range(num_folds):
        fold, seconds = [], 0.0
        while seconds < fold_minutes * 60:
            if not any(queues):
                raise ValueError(f"ran out of utterances while filling fold {len(folds)}")
            queue = queues[turn % len(queues)]
            turn += 1
            if queue:
                row = queue.pop()
                fold.append(row)
                seconds += row["duration"]
        folds.append(fold)
    return folds


def write_finetuning_subsets(split_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
                             fold_minutes: float = 10.0, num_folds: int = FOLDS, seed: int = 0) -> dict:
    """Write ``OUTPUT_DIR/librispeech_finetuning/1h/{0..num_folds-1}/clean/<speaker>/<chapter>/`` from the utterances
    of ``split_dir`` (a LibriSpeech-layout split folder). Returns ``{"folds": [{"utterances", "minutes"}...]}``."""
    rows = load_speech_dataset(str(split_dir)).select_columns(["id", "path", "text", "speaker_id", "duration"])
    folds = choose_folds(rows.to_list(), fold_minutes=fold_minutes, num_folds=num_folds, seed=seed)
    root = Path(output_dir) / "librispeech_finetuning" / "1h"
    if root.exists():
        shutil.rmtree(root)
    summary = []
    for k, fold in enumerate(folds):
        chapters: dict[Path, list[str]] = defaultdict(list)
        for row in fold:
            speaker, chapter = row["id"].split("-")[:2]
            folder = root / str(k) / "clean" / speaker / chapter
            _link(row["path"], folder / os.path.basename(row["path"]))
            chapters[folder / f"{speaker}-{chapter}.trans.txt"].append(f"{row['id']} {row['text']}\n")
        for path, lines in chapters.items():
            path.write_text("".join(sorted(lines)), encoding="utf-8")
        summary.append({"utterances": len(fold), "minutes": sum(row["duration"] for row in fold) / 60})
    return {"folds": summary}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hf_wav2vec2.corpus.subsets", description=__doc__.split("\n")[0])
    parser.add_argument("--split_dir", required=True, help="a LibriSpeech-layout split folder (the training split)")
    parser.add_argument("--output_dir", required=True, help="the subsets go to OUTPUT_DIR/librispeech_finetuning")
    parser.add_argument("--fold_minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = write_finetuning_subsets(args.split_dir, args.output_dir, fold_minutes=args.fold_minutes, seed=args.seed)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
