"""The paper's low-resource claim at the scale of a 2-core CPU (section 5.1, Table 1): fine-tuning a pretrained model
with 10 minutes, 1 hour or all of the labels, against the same fine-tuning from random weights.

Usage (what ``make experiment`` runs):
    python experiments/low_resource.py --output_dir runs/experiment --corpus_dir data/experiment_corpus

Steps, each skipped when its output exists (re-running continues a stopped experiment):
    1. a synthetic corpus in the LibriSpeech layout (``hf_wav2vec2.corpus``), large enough for a 1-hour subset
    2. Libri-light-style labelled subsets of its train-clean split: six disjoint, speaker-balanced 10-minute folds
       (``10min`` = fold 0, ``1h`` = all six; ``hf_wav2vec2.corpus.subsets``); ``all`` is the whole train-clean
    3. self-supervised pretraining once, on all the training audio (labels unused), ``train_pretrain.py``
    4. for each subset, CTC fine-tuning (``train_ctc.py``) of the pretrained model and of a randomly initialised model
       of the same architecture ("scratch"), with the same recipe, number of updates, seed and vocabulary
    5. ``results.json`` (per subset and arm: dev and test WER/CER, updates, wall time) and ``cer_vs_labels.png``

Every fine-tuned model is a complete folder ``OUTPUT_DIR/{pretrained,scratch}-{10min,1h,all}`` that
``pipeline("automatic-speech-recognition", model=folder, trust_remote_code=True)`` loads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SUBSETS = ("10min", "1h", "all")
ARMS = ("pretrained", "scratch")


def run(command: list[str], log: Path, env: dict | None = None) -> float:
    """Run one step with its output in ``log``; returns the wall time in seconds."""
    print("+", " ".join(command), f"> {log}", flush=True)
    start = time.perf_counter()
    with open(log, "a", encoding="utf-8") as handle:
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                       env={**os.environ, **(env or {})})
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="runs/experiment")
    parser.add_argument("--corpus_dir", default="data/experiment_corpus")
    parser.add_argument("--train_utterances", type=int, default=2400,
                        help="train-clean size (about 2.75 s each: 110 min)")
    parser.add_argument("--eval_utterances", type=int, default=150, help="dev-clean and test-clean sizes")
    parser.add_argument("--fold_minutes", type=float, default=10.0, help="a labelled fold (10min); 1h = six folds")
    parser.add_argument("--pretrain_steps", type=int, default=1000)
    parser.add_argument("--finetune_steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", choices=("true", "false"), default="false",
                        help="bf16 autocast in both stages (make experiment: true where the CPU has native bf16)")
    args = parser.parse_args(argv)
    out, corpus = Path(args.output_dir), Path(args.corpus_dir)
    out.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    librispeech = corpus / "LibriSpeech"
    timings = {}

    # 1. corpus
    if not (librispeech / "corpus.json").exists():
        sizes = f"{args.train_utterances},{args.eval_utterances},{args.eval_utterances}"
        timings["corpus_s"] = run([python, "-m", "hf_wav2vec2.corpus", "--output_dir", str(corpus),
                                   "--utterances_per_split", sizes, "--seed", str(args.seed)], out / "corpus.log")

    # 2. labelled subsets of train-clean
    finetuning = corpus / "librispeech_finetuning"
    if not (finetuning / "1h" / "5").is_dir():
        from hf_wav2vec2.corpus.subsets import write_finetuning_subsets

        summary = write_finetuning_subsets(librispeech / "train-clean", corpus, fold_minutes=args.fold_minutes,
                                           seed=args.seed)
        (out / "subsets.json").write_text(json.dumps(summary, indent=1))
    sources = {"10min": (finetuning, "10min"), "1h": (finetuning, "1h"), "all": (librispeech, "train-clean")}

    # 3. pretraining on all the training audio; the scratch arm starts from the same architecture, random weights
    pretrained = out / "pretrain"
    if not (pretrained / "model.safetensors").exists():
        timings["pretrain_s"] = run([
            python, "train_pretrain.py", "--dataset_name", str(librispeech), "--train_split_name", "train-clean",
            "--eval_split_name", "dev-clean", "--config", "tiny", "--output_dir", str(pretrained),
            "--max_steps", str(args.pretrain_steps), "--eval_steps", str(max(args.pretrain_steps // 10, 1)),
            "--save_steps", str(max(args.pretrain_steps // 4, 1)), "--seed", str(args.seed),
            "--gumbel_schedule", "paper", "--resume_from_checkpoint", "latest"], out / "pretrain.log",
            env={"ACCELERATE_MIXED_PRECISION": "bf16" if args.bf16 == "true" else "no"})
    scratch = out / "scratch-init"
    if not (scratch / "model.safetensors").exists():
        from hf_wav2vec2 import W2V2Config, W2V2ForPreTraining

        torch.manual_seed(args.seed)
        W2V2ForPreTraining(W2V2Config.from_pretrained(pretrained)).save_pretrained(scratch)

    # One vocabulary for every run: the letters of all training transcripts (a 10-minute subset may miss some).
    processor_dir = out / "processor"
    if not (processor_dir / "vocab.json").exists():
        from hf_wav2vec2.data import load_speech_dataset
        from hf_wav2vec2.data.ctc import build_processor, build_vocabulary

        texts = load_speech_dataset(str(librispeech), split="train-clean")["text"]
        build_processor(build_vocabulary(texts), feat_extract_norm="group").save_pretrained(processor_dir)

    # 4. fine-tuning: both arms, every subset, identical recipe, updates and seed
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {"runs": {}}
    for subset in SUBSETS:
        for arm in ARMS:
            name = f"{arm}-{subset}"
            folder = out / name
            if (folder / "eval_results.json").exists() and name in results["runs"]:
                continue
            dataset, split = sources[subset]
            wall = run([
                python, "train_ctc.py", "--model_name_or_path", str(pretrained if arm == "pretrained" else scratch),
                "--dataset_name", str(dataset), "--train_split_name", split, "--eval_dataset_name", str(librispeech),
                "--eval_split_name", "dev-clean", "--test_split_name", "test-clean", "--processor_name_or_path",
                str(processor_dir), "--recipe", "tiny", "--max_steps", str(args.finetune_steps),
                "--seed", str(args.seed), "--output_dir", str(folder), "--disable_tqdm", "true", "--bf16", args.bf16,
                "--resume_from_checkpoint", "latest"], out / f"{name}.log")
            scores = json.loads((folder / "eval_results.json").read_text())["results"]
            dev, test = scores["dev-clean"], scores["test-clean"]
            results["runs"][name] = {
                "subset": subset, "arm": arm, "updates": args.finetune_steps, "wall_s": round(wall, 1),
                "dev_wer": dev["eval_wer"], "dev_cer": dev["eval_cer"],
                "test_wer": test["test_wer"], "test_cer": test["test_cer"],
                "labelled_minutes": labelled_minutes(dataset, split),
            }
            results.update({"settings": vars(args), **{k: round(v, 1) for k, v in timings.items()}})
            (out / "results.json").write_text(json.dumps(results, indent=1))

    # 5. the plot
    plot(results, out / "cer_vs_labels.png")
    print(json.dumps(results, indent=1))
    return results


def labelled_minutes(dataset: Path, split: str) -> float:
    from hf_wav2vec2.data import load_speech_dataset

    return round(sum(load_speech_dataset(str(dataset), split=split)["duration"]) / 60, 2)


def plot(results: dict, path: Path) -> None:
    """Test CER (%) against labelled minutes (log scale), one line per arm."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("the experiment's figure needs matplotlib: the `figures` extra, pip install "
                          "'.[figures]' in a clone of hf_wav2vec2") from error

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 3.5))
    for arm, marker in zip(ARMS, "os"):
        runs = sorted((r for r in results["runs"].values() if r["arm"] == arm), key=lambda r: r["labelled_minutes"])
        axes.plot([r["labelled_minutes"] for r in runs], [100 * r["test_cer"] for r in runs], marker=marker,
                  label=f"{arm} ({'self-supervised pretraining' if arm == 'pretrained' else 'random init'})")
    axes.set_xscale("log")
    axes.set_xlabel("labelled audio (minutes)")
    axes.set_ylabel("test CER (%)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
