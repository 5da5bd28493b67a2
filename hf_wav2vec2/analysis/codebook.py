"""The codebook analysis of the paper's Figure 3: which phones the quantizer's discrete codes stand for.

Usage:
    python -m hf_wav2vec2.analysis.codebook --model runs/pretrain-tiny \
        --dataset_name data/default_corpus/LibriSpeech --eval_split_name dev-clean --output_dir runs/codebook
    python -m hf_wav2vec2.analysis.codebook ... --random_init   # the same architecture with random weights

Writes ``OUTPUT_DIR/codebook.json`` (the metrics below, with what was analysed) and
``OUTPUT_DIR/p_phone_given_code.png`` (P(phone | code) of the most used codes, as in Figure 3).

Alignment format: beside each audio file ``<name>.<ext>`` a ``<name>.phones.tsv`` with one
``start_s<TAB>end_s<TAB>phone`` line per phone (the default corpus writes these, ``hf_wav2vec2.corpus``); any corpus
with phone alignments works once they are written in this form. Each frame gets the phone whose interval holds the
centre of the frame's receptive field; frames outside every interval are left out.

A code is the combination of the G entries a frame picks (one per codebook, without Gumbel noise: the eval-mode
choice, ``W2V2ForPreTraining.code_ids``). From the frame-level co-occurrence counts n(code, phone):
    codes_used     distinct codes seen
    code_entropy   H(code) in bits
    phone_purity   sum over codes of max_phone n(code, phone) / N: the accuracy of labelling each code with its
                   most frequent phone (HuBERT's phone purity)
    pnmi           I(phone; code) / H(phone), phone-normalised mutual information (HuBERT, Hsu et al., 2021):
                   1 when the code determines the phone, 0 when they are independent
These are plug-in estimates from counts, biased upwards when the codes seen are not few compared with the frames
(about (codes - 1)(phones - 1) / (2 N ln 2) bits of mutual information, Miller-Madow; reported as
``mi_bias_bits``): with G = 2 codebooks of 64 entries, a random model uses ~3000 combinations on 20k frames, and its
combined-code PNMI is mostly that bias. So the same metrics are also given per codebook (``codebooks``: each
codebook's entry alone, V codes) and averaged (``pnmi_per_codebook``), which is the comparison to make between
models on a small corpus.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..configuration import SAMPLING_RATE, W2V2Config
from ..corpus import read_phones
from ..data import decode_audio, load_speech_dataset
from ..frames import receptive_field
from ..modeling import W2V2ForPreTraining

logger = logging.getLogger(__name__)

ALIGNMENT_SUFFIX = ".phones.tsv"


def frame_centres(total_frames: int, conv_kernel: Sequence[int], conv_stride: Sequence[int],
                  sampling_rate: int) -> np.ndarray:
    """(total_frames,) seconds: the centre of each frame's receptive field (frame t sees samples
    [t * stride, t * stride + field))."""
    stride = int(np.prod(conv_stride))
    field = receptive_field(conv_kernel, conv_stride)
    return (np.arange(total_frames) * stride + (field - 1) / 2) / sampling_rate


def frame_phones(intervals: Sequence[tuple[float, float, str]], centres: np.ndarray) -> list[str | None]:
    """The phone whose [start, end) interval holds each centre; None where no interval does."""
    starts = np.array([start for start, _, _ in intervals])
    index = np.searchsorted(starts, centres, side="right") - 1
    labels: list[str | None] = []
    for centre, i in zip(centres, index):
        inside = i >= 0 and centre < intervals[i][1]
        labels.append(intervals[i][2] if inside else None)
    return labels


def cooccurrence(codes: Iterable, phones: Iterable[str]) -> tuple[list, list[str], np.ndarray]:
    """Frame-level counts: (code keys, phone keys, (codes, phones) int64 matrix), keys in order of first sight."""
    code_index: dict = {}
    phone_index: dict[str, int] = {}
    pairs = []
    for code, phone in zip(codes, phones, strict=True):
        pairs.append((code_index.setdefault(code, len(code_index)), phone_index.setdefault(phone, len(phone_index))))
    counts = np.zeros((len(code_index), len(phone_index)), dtype=np.int64)
    if pairs:
        np.add.at(counts, tuple(np.array(pairs).T), 1)
    return list(code_index), list(phone_index), counts


def _entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def codebook_metrics(counts: np.ndarray) -> dict[str, float | int]:
    """Metrics of a (codes, phones) co-occurrence count matrix (see the module docstring); entropies in bits."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        raise ValueError("no aligned frame: the co-occurrence counts are all zero")
    joint = counts / total
    p_code, p_phone = joint.sum(1), joint.sum(0)
    phone_entropy = _entropy_bits(p_phone)
    if phone_entropy == 0:
        raise ValueError("every aligned frame has the same phone: PNMI = I / H(phone) is undefined")
    nonzero = joint > 0
    mutual = float((joint[nonzero] * np.log2(joint[nonzero] / np.outer(p_code, p_phone)[nonzero])).sum())
    return {
        "frames": int(total),
        "codes_used": int((p_code > 0).sum()),
        "phones": int((p_phone > 0).sum()),
        "code_entropy": _entropy_bits(p_code),
        "phone_entropy": phone_entropy,
        "mutual_information": max(mutual, 0.0),  # rounding can leave -1e-16 for independent counts
        "phone_purity": float(counts.max(1).sum() / total),
        "pnmi": max(mutual, 0.0) / phone_entropy,
        "mi_bias_bits": float(((p_code > 0).sum() - 1) * ((p_phone > 0).sum() - 1) / (2 * total * np.log(2))),
    }


@torch.inference_mode()
def collect(model: W2V2ForPreTraining, dataset, *, max_utterances: int | None = None) -> dict:
    """Codes and phones of every aligned frame of ``dataset`` (rows with a ``path``, as ``load_speech_dataset``
    gives), one utterance at a time. Utterances without an alignment file are counted and skipped."""
    config = model.config
    rate = SAMPLING_RATE
    codes, phones = [], []
    analysed = missing = unaligned = 0
    for row in dataset:
        if max_utterances is not None and analysed >= max_utterances:
            break
        alignment = os.path.splitext(row["path"])[0] + ALIGNMENT_SUFFIX
        if not os.path.exists(alignment):
            missing += 1
            continue
        waveform = decode_audio(row["path"], rate, min_samples=config.receptive_field)
        ids = model.code_ids(torch.from_numpy(waveform)[None])[0]  # (T, G)
        frame_codes = ids.tolist()
        labels = frame_phones(read_phones(alignment),
                              frame_centres(len(frame_codes), config.conv_kernel, config.conv_stride, rate))
        for code, phone in zip(frame_codes, labels):
            if phone is None:
                unaligned += 1
                continue
            codes.append(tuple(code))
            phones.append(phone)
        analysed += 1
    if analysed == 0:
        raise ValueError(f"no utterance with a phone alignment: expected a '<name>{ALIGNMENT_SUFFIX}' file beside "
                         f"each audio file ({missing} audio files had none)")
    return {"codes": codes, "phones": phones, "utterances": analysed, "without_alignment": missing,
            "unaligned_frames": unaligned}


def plot_p_phone_given_code(code_keys: list, phone_keys: list[str], counts: np.ndarray, path: str | os.PathLike,
                            top_codes: int = 100) -> None:
    """Figure 3: P(phone | code) for the ``top_codes`` most used codes (columns, grouped by their most likely phone)
    against the phones (rows, most frequent first)."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("the codebook figure needs matplotlib: the `figures` extra, pip install '.[figures]' in a "
                          "clone of hf_wav2vec2") from error

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phone_order = np.argsort(-counts.sum(0), kind="stable")
    used = np.argsort(-counts.sum(1), kind="stable")[:top_codes]
    p_given = counts[used] / counts[used].sum(1, keepdims=True)  # (codes, phones)
    rank_of_phone = np.empty_like(phone_order)
    rank_of_phone[phone_order] = np.arange(len(phone_order))
    best = rank_of_phone[p_given.argmax(1)]
    columns = used[np.lexsort((-p_given.max(1), best))]  # by most likely phone, then by how sure
    image = (counts[columns] / counts[columns].sum(1, keepdims=True))[:, phone_order].T  # (phones, codes)
    figure, axes = plt.subplots(figsize=(max(6.0, 0.09 * len(columns) + 2), max(4.0, 0.16 * len(phone_order) + 1)))
    shown = axes.imshow(image, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
    axes.set_yticks(range(len(phone_order)), [phone_keys[i] for i in phone_order], fontsize=6)
    axes.set_xticks([])
    axes.set_xlabel(f"the {len(columns)} most used codes (grouped by their most likely phone)")
    axes.set_ylabel("phone")
    figure.colorbar(shown, ax=axes, label="P(phone | code)")
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)


def analyse(model: W2V2ForPreTraining, dataset, output_dir: str | os.PathLike, *, max_utterances: int | None = None,
            top_codes: int = 100, description: dict | None = None) -> dict:
    """Collect, score and plot; writes codebook.json and p_phone_given_code.png into ``output_dir``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    frames = collect(model.eval(), dataset, max_utterances=max_utterances)
    code_keys, phone_keys, counts = cooccurrence(frames["codes"], frames["phones"])
    per_codebook = [codebook_metrics(cooccurrence([code[g] for code in frames["codes"]], frames["phones"])[2])
                    for g in range(model.config.num_codevector_groups)]
    result = {**(description or {}), "utterances": frames["utterances"],
              "utterances_without_alignment": frames["without_alignment"],
              "unaligned_frames": frames["unaligned_frames"], **codebook_metrics(counts),
              "pnmi_per_codebook": float(np.mean([m["pnmi"] for m in per_codebook])),
              "codebooks": per_codebook,
              "codebook_size": [model.config.num_codevector_groups, model.config.num_codevectors_per_group]}
    with open(output_dir / "codebook.json", "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    plot_p_phone_given_code(code_keys, phone_keys, counts, output_dir / "p_phone_given_code.png", top_codes)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a pretraining folder (W2V2ForPreTraining save_pretrained)")
    # the training scripts' option names (the earlier ones still work)
    parser.add_argument("--dataset_name", "--dataset", required=True, help="local LibriSpeech-layout tree with "
                                                                           "*.phones.tsv alignments")
    parser.add_argument("--eval_split_name", "--split", default=None, help="split of --dataset_name, e.g. dev-clean")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--random_init", action="store_true",
                        help="analyse the same architecture with random weights (the baseline) instead")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random_init")
    parser.add_argument("--max_utterances", type=int, default=None)
    parser.add_argument("--top_codes", type=int, default=100, help="codes shown in the figure")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    if args.random_init:
        torch.manual_seed(args.seed)
        model = W2V2ForPreTraining(W2V2Config.from_pretrained(args.model))
    else:
        model = W2V2ForPreTraining.from_pretrained(args.model)
    dataset = load_speech_dataset(args.dataset_name, split=args.eval_split_name,
                                  min_samples=model.config.receptive_field)
    description = {"model": args.model, "weights": f"random (seed {args.seed})" if args.random_init else "trained",
                   "dataset": args.dataset_name, "split": args.eval_split_name}
    result = analyse(model, dataset, args.output_dir, max_utterances=args.max_utterances, top_codes=args.top_codes,
                     description=description)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
