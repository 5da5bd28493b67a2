"""What each training script puts into its model card: the data it read (Hub ids kept apart from local folders), the
language, the recipe it actually used, its results and logs, gathered into a ``ModelCardInfo`` that
:func:`hf_wav2vec2.cli.cards.build_model_card` renders.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

from .cards import ASRResult, ModelCardInfo, evaluation_log


def script_data(args, role: str = "train") -> tuple[list[str], str | None, str | None]:
    """(sources, Hub config, split) of a script's ``train``, ``eval`` or ``test`` data, from its dataset options
    (``dataset_name``, ``dataset_config_name``, ``train_split_name``, ``eval_dataset_name``, ``eval_split_name``,
    ``test_split_name``); evaluation data defaults to the training sources and config."""
    sources, config = _as_list(args.dataset_name), args.dataset_config_name
    if role == "train":
        return sources, config, args.train_split_name
    eval_sources = _as_list(getattr(args, "eval_dataset_name", None)) or sources
    split = args.eval_split_name if role == "eval" else getattr(args, "test_split_name", None)
    return eval_sources, config, split


def describe_data(sources: Sequence[str], config: str | None = None, split: str | None = None) -> list[dict]:
    """Each source as the card names it: ``{"hub_id", "name", "text"}``. A Hub dataset (a name that is not a local
    path) keeps its id; a local folder gets ``hub_id`` None and is named by its folder name, or as the synthetic
    corpus it is (``corpus.json`` beside it, written by ``hf_wav2vec2.corpus``): never "LibriSpeech" for speech that
    only has LibriSpeech's layout. No absolute path goes into a card."""
    described = []
    for source in sources:
        source = os.fspath(source)
        where = "".join(f", {k} `{v}`" for k, v in (("config", config), ("split", split)) if v)
        if not os.path.exists(source):
            described.append({"hub_id": source, "name": source,
                              "text": f"Hub dataset [`{source}`](https://huggingface.co/datasets/{source}){where}"})
            continue
        folder = os.path.basename(os.path.abspath(source))
        if os.path.exists(os.path.join(source, "corpus.json")):
            name = SYNTHETIC_CORPUS
            text = (f"{SYNTHETIC_CORPUS}: English sentences spoken by eSpeak NG voices in the LibriSpeech layout "
                    f"(local folder `{folder}`, made by `python -m hf_wav2vec2.corpus`){where}")
        else:
            name = folder
            text = f"local folder `{folder}` (not a Hub dataset){where}"
        described.append({"hub_id": None, "name": name, "text": text})
    return described


def card_language(args, sources: Sequence[str]) -> str | list[str] | None:
    """``--language`` when the script has one; else ``en`` for LibriSpeech, Libri-light and the synthetic corpus
    (all English); else None (unknown: left out of the card's metadata)."""
    language = getattr(args, "language", None)
    if language:
        return language
    for source in sources:
        source = os.fspath(source)
        local = os.path.exists(source)
        name = os.path.basename(os.path.abspath(source)) if local else source
        if "libri" in name.lower() or (local and os.path.exists(os.path.join(source, "corpus.json"))):
            return "en"
    return None


def finetuned_model_card_info(args, training_args, recipe_name: str, recipe: Mapping, train_hours: float,
                              results: Mapping[str, Mapping[str, float]], *,
                              log_history: Sequence[Mapping] = (), normalization: str | None = None) -> ModelCardInfo:
    """The card of a model fine-tuned by ``train_ctc.py``: greedy WER/CER of every evaluated split (in the
    ``model-index`` for Hub data), the data, the recipe actually used, the per-evaluation log (``log_history``, the
    Trainer's ``state.log_history``) and, for a model pretrained by ``train_pretrain.py``, its pretraining record.

    ``args`` and ``training_args`` are train_ctc.py's arguments; ``results`` maps each evaluated split to the
    Trainer's metrics (``eval_wer``/``eval_cer`` for the eval split, ``test_wer``/``test_cer`` otherwise);
    ``normalization`` describes how transcripts were written (``TextNormalizer.describe()``).
    """
    train_sources, train_config, train_split = script_data(args, "train")
    eval_sources, eval_config, eval_split = script_data(args, "eval")
    _, _, test_split = script_data(args, "test")
    train_data = describe_data(train_sources, train_config, train_split)
    asr_results = []
    for split, metrics in results.items():
        prefix = "eval" if split == eval_split else "test"
        for source in describe_data(eval_sources, eval_config, split):
            asr_results.append(ASRResult(
                dataset_type=source["hub_id"], dataset_name=f"{source['name']} {split}", split=split,
                dataset_config=eval_config if source["hub_id"] else None,
                wer=metrics[f"{prefix}_wer"], cer=metrics[f"{prefix}_cer"]))
    data = [f"training ({train_hours:.2f} h of labelled audio): " + "; ".join(d["text"] for d in train_data)]
    for role, split in (("dev", eval_split), ("test", test_split)):
        if split:
            data.append(f"{role}: " + "; ".join(d["text"] for d in describe_data(eval_sources, eval_config, split)))
    mixed = "bf16" if getattr(training_args, "bf16", False) else "fp16" if getattr(training_args, "fp16", False) \
        else "no (fp32)"
    finetuning = {"recipe": recipe_name,
                  "training data": ", ".join(f"{d['name']} {train_split or ''}".strip() for d in train_data),
                  "hours of labelled audio": f"{train_hours:.2f}",
                  **({"transcript normalisation": normalization} if normalization else {}), **recipe,
                  "processes x gradient accumulation": f"{getattr(training_args, 'world_size', 1)} x "
                                                       f"{getattr(training_args, 'gradient_accumulation_steps', 1)}",
                  "LR schedule": "tri-stage (10% warm-up, 40% hold, 50% decay to 0.05x)",
                  "Adam betas, eps": f"(0.9, {training_args.adam_beta2}), {training_args.adam_epsilon}",
                  "mixed precision": mixed, "seed": getattr(training_args, "seed", None)}
    pretraining, limitations = {}, []
    history = os.path.join(args.model_name_or_path, "train_history.json")
    if os.path.exists(history):
        with open(history) as handle:
            record = json.load(handle)
        pretraining = {"checkpoint": os.path.basename(os.path.abspath(args.model_name_or_path)),
                       "updates": record.get("updates", len(record.get("history", []))),
                       "hours of audio seen": f"{record.get('seen_audio_h', 0.0):.2f}",
                       "skipped updates": record.get("skipped_updates", 0)}
        pretraining.update({f"final validation {k.removeprefix('val_').replace('_', ' ')}": v
                            for k, v in record.get("last_validation", {}).items()})
    if _synthetic(train_data):
        limitations.append("Fine-tuned on synthetic speech (eSpeak NG voices): it shows that the pipeline works and "
                           "is not meant to transcribe real recordings.")
    name = _model_name(training_args.output_dir)
    return ModelCardInfo(
        model_name=name, task="ctc", repo_id=training_args.hub_model_id or name,
        language=card_language(args, train_sources), datasets=_hub_datasets(train_data, eval_sources),
        data=data, results=asr_results, pretraining=pretraining, finetuning=finetuning,
        training_log=evaluation_log(log_history), limitations=limitations,
        base_model=None if os.path.exists(args.model_name_or_path) else args.model_name_or_path)


def pretraining_model_card_info(args, record: Mapping, config) -> ModelCardInfo:
    """The card of a model pretrained by ``train_pretrain.py``: its data and hours, updates, recipe (from ``args``,
    the run's ``record`` as written to train_history.json and the model ``config``) and the final validation
    contrastive loss and accuracy plus the perplexities of the last update."""
    train_sources, train_config, train_split = script_data(args, "train")
    dev_sources, dev_config, dev_split = script_data(args, "eval")
    train_data = describe_data(train_sources, train_config, train_split)
    data = [f"pretraining ({record.get('train_hours', 0.0):.2f} h of unlabelled audio): "
            + "; ".join(d["text"] for d in train_data)]
    if dev_split:
        data.append("validation: " + "; ".join(d["text"] for d in describe_data(dev_sources, dev_config, dev_split)))
    last, val = record.get("last_update", {}), record.get("last_validation", {})
    validation = {}
    if val:
        validation["contrastive loss per masked frame (dev)"] = val.get("val_contrastive_loss")
        validation["accuracy (dev)"] = val.get("val_accuracy")
    for key, label in (("prob_perplexity", "codebook perplexity, soft (last update)"),
                       ("code_perplexity", "codebook perplexity, hard (last update)"),
                       ("contrastive_loss", "contrastive loss per masked frame (last update)"),
                       ("accuracy", "accuracy (last update)")):
        if key in last:
            validation[label] = last[key]
    groups, per_group = config.num_codevector_groups, config.num_codevectors_per_group
    pretraining = {
        "preset / config": _config_name(args.config),
        "training data": ", ".join(f"{d['name']} {train_split or ''}".strip() for d in train_data),
        "hours of training audio": f"{record.get('train_hours', 0.0):.2f}",
        "updates": record.get("updates", len(record.get("history", []))),
        "hours of audio seen": f"{record.get('seen_audio_h', 0.0):.2f}",
        "skipped updates": record.get("skipped_updates", 0),
        "peak learning rate": record.get("learning_rate"),
        "LR schedule": f"linear warm-up ({args.warmup_ratio} of the run), linear decay to 0",
        "max_tokens (audio samples per device and micro-batch)": record.get("max_tokens"),
        "processes x gradient accumulation": f"{record.get('processes', 1)} x "
                                            f"{args.gradient_accumulation_steps}",
        "crop (max_sample_size)": args.max_sample_size,
        "Adam betas, eps, weight decay": f"({args.adam_beta1}, {args.adam_beta2}), {args.adam_epsilon}, "
                                         f"{args.weight_decay}",
        "gradient clipping": args.max_grad_norm,
        "mixed precision": record.get("mixed_precision", "no"),
        "masking p, M": f"{config.mask_time_prob}, {config.mask_time_length}",
        "negatives K": config.num_negatives,
        "codebooks G x V": f"{groups} x {per_group}",
        "Gumbel temperature": f"{config.gumbel_temperature_start} -> {config.gumbel_temperature_end}"
                              + (f" (at the end: {last['temperature']:.3f})" if "temperature" in last else ""),
        "loss weights (diversity, feature penalty)": f"{config.diversity_loss_weight}, "
                                                     f"{config.feature_penalty_weight}",
        "seed": args.seed,
    }
    limitations = []
    if _synthetic(train_data):
        limitations.append("Pretrained on synthetic speech (eSpeak NG voices): it shows that the pipeline works; "
                           "its representations are not meant for real recordings.")
    name = _model_name(args.output_dir)
    return ModelCardInfo(
        model_name=name, task="pretraining", repo_id=args.hub_model_id or name,
        language=card_language(args, train_sources), datasets=_hub_datasets(train_data, dev_sources),
        data=data, pretraining=pretraining, validation=validation, limitations=limitations)


SYNTHETIC_CORPUS = "hf_wav2vec2 synthetic corpus (eSpeak NG)"


def _config_name(name: str | None) -> str | None:
    """A preset by its name, a config.json path by its file or folder name (no path of this machine in a card)."""
    return os.path.basename(os.path.normpath(name)) if name and os.path.exists(name) else name


def _synthetic(data: Sequence[Mapping]) -> bool:
    return any(d["name"] == SYNTHETIC_CORPUS for d in data)


def _model_name(output_dir: str) -> str:
    """The card's model name: the output folder's name."""
    return os.path.basename(os.path.abspath(output_dir))


def _hub_datasets(train_data: Sequence[Mapping], other_sources: Sequence[str]) -> list[str]:
    """The Hub dataset ids among the training data and the other sources, each once (local folders left out)."""
    return _unique(d["hub_id"] for d in (*train_data, *describe_data(other_sources)) if d["hub_id"])


def _as_list(sources) -> list[str]:
    if sources is None:
        return []
    return [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)


def _unique(values) -> list:
    return list(dict.fromkeys(values))
