"""Hub-ready model folders: weights, config with ``auto_map``, our modeling code, processor and a model card.

A folder written by :func:`save_hub_folder` is complete on its own: in a Python where ``hf_wav2vec2`` is not
installed, ``AutoModelForCTC.from_pretrained(folder, trust_remote_code=True)`` and
``pipeline("automatic-speech-recognition", model=folder, trust_remote_code=True)`` load it from the copied code,
which imports only torch, transformers and huggingface_hub. Where ``hf_wav2vec2`` is imported (it registers
model_type ``w2v2`` with the Auto classes) the same folder loads without ``trust_remote_code``.

    folder = save_hub_folder(model, processor, "hub/w2v2-base-10h", card=ModelCardInfo(...))
    copy_model_card(folder, "w2v2-base-10h")          # -> model_cards/w2v2-base-10h.md
    push_hub_folder(folder, "me/w2v2-base-10h")        # huggingface_hub.HfApi.upload_folder

``Trainer.push_to_hub`` re-saves the model and overwrites README.md with its own card: push the folder written here
with :func:`push_hub_folder` instead. The Trainer's intermediate pushes (``push_to_hub`` with a save strategy) get
the code files ``auto_map`` names from :class:`PushCodeFilesCallback`, which ``CTCTrainer`` adds.

Model cards: :func:`finetuned_model_card_info` (``train_ctc.py``) and :func:`pretraining_model_card_info`
(``train_pretrain.py``) gather what :func:`build_model_card` writes: Hub dataset ids in the metadata (local folders
only in the text), language, ``model-index``, the recipe, the per-evaluation log, intended use and limitations, and
the framework versions.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import TrainerCallback
from transformers.dynamic_module_utils import custom_object_save, get_imports

# Top-level packages the copied modeling code may import besides the standard library: what every transformers
# user has installed.
ALLOWED_CODE_IMPORTS = frozenset({"torch", "transformers", "huggingface_hub"})
# Auto class of each head; every folder also maps AutoConfig and AutoModel (the base model loads from any head).
HEAD_AUTO_CLASSES = {"W2V2ForCTC": "AutoModelForCTC", "W2V2ForPreTraining": "AutoModelForPreTraining"}
CARD_TAGS = ("automatic-speech-recognition", "wav2vec2", "hf_wav2vec2")
PRETRAINING_CARD_TAGS = ("wav2vec2", "hf_wav2vec2", "speech", "self-supervised-learning")
# What a pretraining push leaves out: the Accelerate checkpoints (optimizer state, several times the model).
PRETRAINING_PUSH_IGNORE = ("_*", "checkpoints/*", "partial-*")
PAPER_URL = "https://arxiv.org/abs/2006.11477"
CITATION = """@inproceedings{baevski2020wav2vec,
  title     = {wav2vec 2.0: A Framework for Self-Supervised Learning of Speech Representations},
  author    = {Alexei Baevski and Yuhao Zhou and Abdelrahman Mohamed and Michael Auli},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2020},
}"""


# ------------------------------------------------------------------------------------------------ card contents
@dataclass
class ASRResult:
    """One measured result. ``wer`` and ``cer`` are fractions (0.034), as ``evaluate_ctc.py`` reports them; the card
    shows percentages, as the official wav2vec 2.0 cards do.

    dataset_type: Hub dataset id (``openslr/librispeech_asr``), or None for local data: such a result is shown in
    the card's text but kept out of the ``model-index``, whose ``dataset.type`` must be a Hub dataset id.
    dataset_name: display name (``LibriSpeech test-clean``); split: ``test``; dataset_config: ``clean`` or None;
    decoding: ``greedy`` or e.g. ``4-gram LM, beam 500``.
    """

    dataset_type: str | None
    dataset_name: str
    split: str
    wer: float
    cer: float
    dataset_config: str | None = None
    decoding: str = "greedy"


@dataclass
class ModelCardInfo:
    """What the model card says beyond what the model and processor carry.

    task: ``ctc`` (a fine-tuned recogniser) or ``pretraining`` (a self-supervised model without a CTC head).
    model_name: the ``model-index`` name (usually the repo name). repo_id: used in the usage snippets (defaults to
    model_name). language: ISO code(s), or None when unknown (left out of the metadata). datasets: Hub dataset ids
    only (the ``datasets:`` metadata); data: one line per data source, local folders included, for the text.
    pretraining / finetuning: hyper-parameters of the recipe, written as tables in the given order (e.g.
    ``{"updates": 400000, "peak LR": 5e-4, ...}``). training_log: one row per evaluation during training (see
    :func:`evaluation_log`). validation: the final self-supervised figures of a pretraining run (name -> value).
    base_model: the pretrained checkpoint fine-tuned, if it is on the Hub. intended_use and limitations: besides
    the ones every card of the task gets. framework_versions: filled with the running versions when empty.
    """

    model_name: str
    task: str = "ctc"
    language: str | list[str] | None = None
    license: str = "apache-2.0"
    datasets: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    results: list[ASRResult] = field(default_factory=list)
    pretraining: dict = field(default_factory=dict)
    finetuning: dict = field(default_factory=dict)
    training_log: list[dict] = field(default_factory=list)
    validation: dict = field(default_factory=dict)
    description: str = ""
    repo_id: str | None = None
    base_model: str | None = None
    intended_use: str = ""
    limitations: list[str] = field(default_factory=list)
    framework_versions: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in CARD_TASKS:
            raise ValueError(f"ModelCardInfo.task is {self.task!r}; expected one of {CARD_TASKS}")
        bad = [name for name in self.datasets if not _is_hub_dataset_id(name)]
        if bad:
            raise ValueError(f"ModelCardInfo.datasets takes Hub dataset ids (owner/name); got {bad}: describe local "
                             "data in ModelCardInfo.data instead")
        if not self.framework_versions:
            self.framework_versions = framework_versions()

    @classmethod
    def from_dict(cls, values: Mapping) -> ModelCardInfo:
        values = dict(values)
        values["results"] = [r if isinstance(r, ASRResult) else ASRResult(**r) for r in values.get("results", [])]
        return cls(**values)


CARD_TASKS = ("ctc", "pretraining")
# The libraries whose versions decide what a card's numbers mean (the Trainer's cards list the same kind).
FRAMEWORKS = ("torch", "transformers", "datasets", "accelerate", "hf_wav2vec2")


def framework_versions() -> dict[str, str]:
    """Installed version of each of FRAMEWORKS ("not installed" for a missing one)."""
    versions = {}
    for name in FRAMEWORKS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            module = sys.modules.get(name)
            versions[name] = getattr(module, "__version__", "not installed")
    return versions


def build_model_card(info: ModelCardInfo, model=None) -> ModelCard:
    """The card: YAML front matter (language, license, Hub datasets, tags, ``model-index`` with WER and CER per Hub
    dataset, config, split and decoding), then the data, results, per-evaluation log, usage, recipe, architecture
    (when ``model`` is given), intended use and limitations, framework versions and the citation."""
    ctc = info.task == "ctc"
    eval_results = []
    for r in info.results:
        if r.dataset_type is None:
            continue  # local data: described in the text, never passed off as a Hub dataset
        for metric in ("wer", "cer"):
            eval_results.append(EvalResult(
                task_type="automatic-speech-recognition", task_name="Automatic Speech Recognition",
                dataset_type=r.dataset_type, dataset_name=r.dataset_name, dataset_split=r.split,
                dataset_config=r.dataset_config, metric_type=metric, metric_value=round(100 * getattr(r, metric), 2),
                metric_name=f"{r.split} {metric.upper()} ({r.decoding})",
            ))
    data = ModelCardData(
        language=info.language, license=info.license, library_name="transformers",
        tags=list(CARD_TAGS if ctc else PRETRAINING_CARD_TAGS), datasets=list(info.datasets) or None,
        metrics=["wer", "cer"] if ctc else None, base_model=info.base_model,
        pipeline_tag="automatic-speech-recognition" if ctc else None,
        model_name=info.model_name if eval_results else None,  # the model-index name; no index, no name
        eval_results=eval_results or None,
    )
    repo = info.repo_id or info.model_name
    sections = [f"# {info.model_name}", _intro(info)]
    if info.data:
        sections.append("## Data\n\n" + "\n".join(f"- {line}" for line in info.data))
    if info.results:
        rows = [f"| {r.dataset_name} | {r.split} | {r.decoding} | {100 * r.wer:.2f} | {100 * r.cer:.2f} |"
                for r in info.results]
        results = ("## Results\n\n| dataset | split | decoding | WER % | CER % |\n|---|---|---|---|---|\n"
                   + "\n".join(rows))
        if any(r.dataset_type is None for r in info.results):
            results += ("\n\nResults on local data (see Data) are not in the `model-index` metadata, which names Hub "
                        "datasets only.")
        sections.append(results)
    if info.validation:
        sections.append("## Final validation (self-supervised task)\n\n| | |\n|---|---|\n"
                        + "\n".join(f"| {k} | {_value(v)} |" for k, v in info.validation.items()))
    if info.training_log:
        sections.append(_training_log(info.training_log))
    sections.append(_usage(repo) if ctc else _pretraining_usage(repo))
    recipe = ["## Training recipe"]
    for title, values in (("Pretraining (self-supervised)", info.pretraining), ("CTC fine-tuning", info.finetuning)):
        if values:
            recipe.append(f"### {title}\n\n| hyper-parameter | value |\n|---|---|\n"
                          + "\n".join(f"| {k} | {_value(v)} |" for k, v in values.items()))
    if len(recipe) > 1:
        sections.append("\n\n".join(recipe))
    if model is not None:
        sections.append(_architecture(model))
    sections.append(_use_and_limitations(info, model))
    sections.append("## Framework versions\n\n"
                    + "\n".join(f"- {name} {version}" for name, version in info.framework_versions.items()))
    sections.append(f"## Citation\n\n```bibtex\n{CITATION}\n```")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def evaluation_log(log_history: Sequence[Mapping], prefix: str = "eval") -> list[dict]:
    """One row per evaluation during training, from the Trainer's ``state.log_history``: step, epoch, the training
    loss last logged at or before that step, and the ``{prefix}_loss``/``_wer``/``_cer`` of the evaluation.
    Evaluations after training (after the entry with ``train_runtime``) are the final results, not the log."""
    rows, train_loss = [], None
    for entry in log_history:
        if "train_runtime" in entry:
            break
        if "loss" in entry:
            train_loss = entry["loss"]
        if f"{prefix}_wer" in entry:
            rows.append({"step": entry.get("step"), "epoch": entry.get("epoch"), "training loss": train_loss,
                         "dev loss": entry.get(f"{prefix}_loss"), "dev WER %": 100 * entry[f"{prefix}_wer"],
                         "dev CER %": 100 * entry[f"{prefix}_cer"] if f"{prefix}_cer" in entry else None})
    return rows


def _training_log(rows: Sequence[Mapping]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_value(row.get(c)) for c in columns) + " |" for row in rows]
    return ("## Evaluations during training\n\nGreedy decoding on the dev split; the training loss is the mean "
            "since the previous log.\n\n" + "\n".join(lines))


def _value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


# ----------------------------------------------------------------------------------- cards of the two scripts
def script_data(args, role: str = "train") -> tuple[list[str], str | None, str | None]:
    """(sources, Hub config, split) of a script's ``train``, ``eval`` or ``test`` data.

    Reads the Hub-style names (``dataset_name``, ``dataset_config_name``, ``train_split_name``,
    ``eval_split_name``, ``test_split_name``) and falls back to the older ones (``dataset``, ``split``,
    ``eval_dataset``/``dev_dataset``, ``eval_split``/``dev_split``, ``test_split``); evaluation data defaults to
    the training sources and config."""
    sources = _first(args, "dataset_name", "dataset")
    config = _first(args, "dataset_config_name", "hub_config")
    if role == "train":
        return _as_list(sources), config, _first(args, "train_split_name", "split")
    eval_sources = _first(args, "eval_dataset_name", "eval_dataset", "dev_dataset") or sources
    eval_config = _first(args, "eval_dataset_config_name") or config
    names = ("eval_split_name", "eval_split", "dev_split") if role == "eval" else ("test_split_name", "test_split")
    return _as_list(eval_sources), eval_config, _first(args, *names)


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
    if any(d["name"] == SYNTHETIC_CORPUS for d in train_data):
        limitations.append("Fine-tuned on synthetic speech (eSpeak NG voices): it shows that the pipeline works and "
                           "is not meant to transcribe real recordings.")
    name = os.path.basename(os.path.abspath(training_args.output_dir))
    return ModelCardInfo(
        model_name=name, task="ctc", repo_id=training_args.hub_model_id or name,
        language=card_language(args, train_sources),
        datasets=_unique(d["hub_id"] for d in (*train_data, *describe_data(eval_sources)) if d["hub_id"]),
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
        "preset / config": _config_name(getattr(args, "config", None)),
        "training data": ", ".join(f"{d['name']} {train_split or ''}".strip() for d in train_data),
        "hours of training audio": f"{record.get('train_hours', 0.0):.2f}",
        "updates": record.get("updates", len(record.get("history", []))),
        "hours of audio seen": f"{record.get('seen_audio_h', 0.0):.2f}",
        "skipped updates": record.get("skipped_updates", 0),
        "peak learning rate": record.get("learning_rate"),
        "LR schedule": f"linear warm-up ({getattr(args, 'warmup_ratio', None)} of the run), linear decay to 0",
        "max_tokens (audio samples per device and micro-batch)": record.get("max_tokens"),
        "processes x gradient accumulation": f"{record.get('processes', 1)} x "
                                            f"{getattr(args, 'gradient_accumulation_steps', 1)}",
        "crop (max_sample_size)": getattr(args, "max_sample_size", None),
        "Adam betas, eps, weight decay": "({}, {}), {}, {}".format(
            *(getattr(args, name, None) for name in ("adam_beta1", "adam_beta2", "adam_epsilon", "weight_decay"))),
        "gradient clipping": getattr(args, "max_grad_norm", None),
        "mixed precision": record.get("mixed_precision", "no"),
        "masking p, M": f"{config.mask_time_prob}, {config.mask_time_length}",
        "negatives K": config.num_negatives,
        "codebooks G x V": f"{groups} x {per_group}",
        "Gumbel temperature": f"{config.gumbel_temperature_start} -> {config.gumbel_temperature_end}"
                              + (f" (at the end: {last['temperature']:.3f})" if "temperature" in last else ""),
        "loss weights (diversity, feature penalty)": f"{config.diversity_loss_weight}, "
                                                     f"{config.feature_penalty_weight}",
        "seed": getattr(args, "seed", None),
    }
    limitations = []
    if any(d["name"] == SYNTHETIC_CORPUS for d in train_data):
        limitations.append("Pretrained on synthetic speech (eSpeak NG voices): it shows that the pipeline works; "
                           "its representations are not meant for real recordings.")
    name = os.path.basename(os.path.abspath(args.output_dir))
    return ModelCardInfo(
        model_name=name, task="pretraining", repo_id=getattr(args, "hub_model_id", None) or name,
        language=card_language(args, train_sources),
        datasets=_unique(d["hub_id"] for d in (*train_data, *describe_data(dev_sources)) if d["hub_id"]),
        data=data, pretraining=pretraining, validation=validation, limitations=limitations)


SYNTHETIC_CORPUS = "hf_wav2vec2 synthetic corpus (eSpeak NG)"


def _config_name(name: str | None) -> str | None:
    """A preset by its name, a config.json path by its file or folder name (no path of this machine in a card)."""
    return os.path.basename(os.path.normpath(name)) if name and os.path.exists(name) else name


def _first(args, *names):
    for name in names:
        value = getattr(args, name, None)
        if value:
            return value
    return None


def _as_list(sources) -> list[str]:
    if sources is None:
        return []
    return [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)


def _unique(values) -> list:
    return list(dict.fromkeys(values))


def _is_hub_dataset_id(name: str) -> bool:
    """``owner/name`` or a legacy canonical ``name``, in the characters the Hub allows."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not os.path.isabs(name) and not name.startswith(".")


def _intro(info: ModelCardInfo) -> str:
    if info.task == "ctc":
        text = (f"wav2vec 2.0 ([Baevski et al., 2020]({PAPER_URL})) with a CTC head, trained with "
                "hf_wav2vec2 (a from-scratch implementation inside the Hugging Face ecosystem). "
                "Input: 16 kHz mono audio. Output: the characters of `vocab.json` with a word delimiter "
                "(for LibriSpeech: upper-case letters and apostrophe, LibriSpeech-normalised transcripts).")
    else:
        text = (f"wav2vec 2.0 ([Baevski et al., 2020]({PAPER_URL})) pretrained without labels (the contrastive "
                "task over quantized latent speech representations), with hf_wav2vec2 (a from-scratch "
                "implementation inside the Hugging Face ecosystem). Input: 16 kHz mono audio. It has no CTC head: "
                "fine-tune it on transcribed speech before it can transcribe (see Fine-tuning).")
    return f"{info.description.strip()}\n\n{text}" if info.description.strip() else text


def _use_and_limitations(info: ModelCardInfo, model) -> str:
    language = ", ".join(_as_list(info.language)) if info.language else "not stated (no `--language` given)"
    if info.task == "ctc":
        intended = info.intended_use or (
            f"Transcribing 16 kHz read speech in the language of its training data ({language}) that resembles that "
            "data; a baseline to compare with and to fine-tune further. It is not validated for any deployment "
            "or for decisions about people.")
        limits = [
            f"Language: {language}. It writes only the characters of its vocabulary: no digits, casing or "
            "punctuation beyond what the training transcripts had; greedy decoding unless you add an n-gram LM.",
            "Data: measured only on the data and splits listed above. Not tested on other languages or accents, "
            "spontaneous or conversational speech, noisy or far-field recordings, telephone-band (8 kHz) audio, "
            "children's speech, or long recordings without chunking.",
        ]
    else:
        intended = info.intended_use or (
            "A starting point for CTC fine-tuning (or other downstream speech tasks) on audio like its "
            f"pretraining data ({language}).")
        limits = [
            "It does not transcribe: it has no output vocabulary. The validation figures measure the "
            "self-supervised task, not speech recognition.",
            f"Data: representations learned only from the audio listed above (language: {language}). How well "
            "they serve other languages, domains, noisy or telephone-band audio has not been measured.",
        ]
    limits += info.limitations
    if model is not None and getattr(model.config, "feat_extract_norm", None) == "group":
        limits.append(
            "Group-norm feature encoder: hf_wav2vec2 takes the group-norm statistics over real samples only, so an "
            "item of a padded batch gives the same outputs as alone. Stock transformers' `Wav2Vec2` (and an export "
            "of these weights to it) normalises over the padding too: on padded batches the outputs differ from "
            "stock transformers; unpadded inputs give the same outputs.")
    return (f"## Intended use\n\n{intended}\n\n## Limitations\n\n" + "\n".join(f"- {line}" for line in limits))


def _pretraining_usage(repo: str) -> str:
    return f"""## Fine-tuning

With hf_wav2vec2 installed (its console command `w2v2-train-ctc` runs the paper's CTC recipe with the
transformers Trainer; see `w2v2-train-ctc --help`):

```bash
w2v2-train-ctc --model_name_or_path {repo} --dataset /data/librispeech_finetuning --split 10h \\
    --eval_dataset /data/LibriSpeech --eval_split dev-other --recipe 10h --output_dir runs/my-10h
```

## Usage (features)

The modeling code is in this repository (`modeling.py` and the files it imports; they import only torch,
transformers and huggingface_hub): pass `trust_remote_code=True`, or `import hf_wav2vec2` first.

```python
import torch
from transformers import AutoFeatureExtractor, AutoModel

model = AutoModel.from_pretrained("{repo}", trust_remote_code=True).eval()
extractor = AutoFeatureExtractor.from_pretrained("{repo}")
inputs = extractor(waveform, sampling_rate=16000, return_tensors="pt")  # 1-D float array at 16 kHz
with torch.inference_mode():
    hidden = model(**inputs).last_hidden_state  # (batch, frames, hidden), 20 ms per frame
```"""


def _usage(repo: str) -> str:
    return f"""## Usage

The modeling code is in this repository (`modeling.py` and the files it imports; they import only torch,
transformers and huggingface_hub): pass `trust_remote_code=True`, or `import hf_wav2vec2` first, which registers
the model type with the Auto classes.

```python
from transformers import pipeline

asr = pipeline("automatic-speech-recognition", model="{repo}", trust_remote_code=True)
asr(waveform)  # 1-D float numpy array at 16 kHz
asr(waveform, chunk_length_s=20, stride_length_s=4, return_timestamps="word")  # long audio, word times
```

transformers decodes audio *files* (paths, bytes) with the `ffmpeg` program. Without FFmpeg, decode with
soundfile and resample with soxr (the pipeline's own resampling of `{{"raw", "sampling_rate"}}` dicts needs
torchaudio):

```python
import soundfile as sf
import soxr

audio, rate = sf.read("speech.flac", dtype="float32", always_2d=True)  # (samples, channels)
asr(soxr.resample(audio.mean(axis=1), rate, 16000))
```

With hf_wav2vec2 installed (`pip install .` in a clone of its repository), `from hf_wav2vec2.pipeline import
asr_pipeline` and `asr_pipeline("{repo}")` do this themselves: that pipeline takes paths, bytes and arrays at any
sampling rate.

```python
import torch
from transformers import AutoModelForCTC, AutoProcessor

model = AutoModelForCTC.from_pretrained("{repo}", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)
inputs = processor(waveform, sampling_rate=16000, return_tensors="pt")
with torch.inference_mode():
    logits = model(**inputs).logits  # (batch, frames, vocab), 20 ms per frame
print(processor.batch_decode(logits.argmax(-1))[0])
```

Word error rates, greedy and with a KenLM n-gram (the `lm` extra: `pip install ".[lm]"` in that clone):

```bash
w2v2-evaluate-ctc --model {repo} --dataset /data/LibriSpeech --split test-clean \\
    --kenlm 4-gram.arpa.gz --beam_size 500 --lm_weight 2 --word_score -1
```"""


def _architecture(model) -> str:
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    rows = {
        "class": type(model).__name__,
        "parameters": f"{params:,}",
        "conv feature encoder": f"{len(cfg.conv_dim)} layers, {cfg.conv_dim[-1]} channels, "
                                f"{cfg.feat_extract_norm} norm, {cfg.inputs_to_logits_ratio} samples per frame",
        "Transformer": f"{cfg.num_hidden_layers} x {cfg.hidden_size}, {cfg.num_attention_heads} heads, "
                       f"FFN {cfg.intermediate_size}, {'pre' if cfg.do_stable_layer_norm else 'post'}-LN",
    }
    if hasattr(model, "lm_head"):  # a pretraining model's vocab_size is a config default that nothing uses
        rows["vocabulary"] = f"{cfg.vocab_size} (blank = pad = id {cfg.pad_token_id})"
    return "## Architecture\n\n| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows.items())


# ------------------------------------------------------------------------------------------------- the folder
def save_hub_folder(model, processor, output_dir: str | os.PathLike, *,
                    card: ModelCardInfo | Mapping | None = None, state_dict: Mapping | None = None) -> Path:
    """Write everything a Hub repo of ``model`` needs into ``output_dir`` and return its path.

    1. ``model.safetensors`` + ``config.json`` (``model.save_pretrained``), with ``state_dict`` as the weights when
       given (a sharded model's full state dict, ``accelerator.get_state_dict(model)``).
    2. The modeling code: the file defining the model class and, recursively, its relative imports
       (transformers' ``custom_object_save``), checked to import only the standard library, torch, transformers and
       huggingface_hub.
    3. ``auto_map`` in config.json: AutoConfig, AutoModel and the head's Auto class (AutoModelForCTC or
       AutoModelForPreTraining).
    4. The processor files (``processor.save_pretrained``), checked against the model's vocabulary and blank.
    5. ``README.md``, the model card (:func:`build_model_card`), when ``card`` is given.

    A model of transformers' own classes (``Wav2Vec2ForCTC``) needs no code: steps 2-3 are skipped for it.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    _check_processor(model, processor)
    # 1. weights and config
    model.save_pretrained(output_dir, state_dict=None if state_dict is None else dict(state_dict))
    # 2-3. code and auto_map
    model_class = type(model)
    if not model_class.__module__.startswith("transformers."):
        copied = custom_object_save(model, output_dir)
        check_code_imports(copied)
        auto_map = {
            "AutoConfig": _class_ref(type(model.config)),
            "AutoModel": _class_ref(type(model.base_model)),
        }
        head = HEAD_AUTO_CLASSES.get(model_class.__name__)
        if head is not None:
            auto_map[head] = _class_ref(model_class)
        config_path = output_dir / "config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["auto_map"] = {**config.get("auto_map", {}), **auto_map}
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    # 4. processor
    if processor is not None:
        processor.save_pretrained(output_dir)
    # 5. card
    if card is not None:
        info = card if isinstance(card, ModelCardInfo) else ModelCardInfo.from_dict(card)
        build_model_card(info, model).save(output_dir / "README.md")
    return output_dir


def _class_ref(cls) -> str:
    """``module_file_stem.ClassName``, the form ``auto_map`` uses for code stored beside config.json."""
    return f"{Path(sys.modules[cls.__module__].__file__).stem}.{cls.__name__}"


def _check_processor(model, processor) -> None:
    """The tokenizer must decode the model's outputs: same blank (pad) id, no more base tokens than logits."""
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None:
        return
    cfg = model.config
    if getattr(cfg, "vocab_size", None) is None:
        return  # a pretraining model: the processor is only its feature extractor plus a future vocabulary
    if tokenizer.pad_token_id != cfg.pad_token_id:
        raise ValueError(f"the tokenizer's pad token id ({tokenizer.pad_token_id}) is the CTC blank and must equal "
                         f"config.pad_token_id ({cfg.pad_token_id})")
    if tokenizer.vocab_size > cfg.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {cfg.vocab_size} "
                         "logits (config.vocab_size)")


def check_code_imports(files: Sequence[str | os.PathLike]) -> None:
    """Raise if a code file for the Hub imports anything beyond the standard library and ALLOWED_CODE_IMPORTS."""
    for path in files:
        extra = {name for name in get_imports(path)
                 if name not in sys.stdlib_module_names and name not in ALLOWED_CODE_IMPORTS}
        if extra:
            raise ValueError(f"{path} imports {sorted(extra)}: Hub code may import only the standard library and "
                             f"{sorted(ALLOWED_CODE_IMPORTS)}")


def check_hub_folder(folder: str | os.PathLike) -> list[str]:
    """What is missing from a Hub folder ([] when complete): weights, config, the code ``auto_map`` points to,
    tokenizer and feature-extractor files, model card."""
    folder = Path(folder)
    problems = []
    if not any(folder.glob("*.safetensors")):
        problems.append("no *.safetensors weights")
    config_path = folder / "config.json"
    if not config_path.is_file():
        return problems + ["no config.json"]
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("model_type") == "w2v2":
        auto_map = config.get("auto_map", {})
        for auto_class in ("AutoConfig", "AutoModel"):
            if auto_class not in auto_map:
                problems.append(f"config.json auto_map lacks {auto_class}")
        for auto_class, ref in auto_map.items():
            module = ref.rsplit(".", 1)[0]
            if not (folder / f"{module}.py").is_file():
                problems.append(f"auto_map {auto_class} -> {ref}, but {module}.py is missing")
    # A CTC head needs its tokenizer; a pretraining model's vocab_size (a config default) decodes nothing.
    architectures = config.get("architectures") or []
    needs_tokenizer = any("ForCTC" in name for name in architectures) if architectures \
        else config.get("vocab_size") is not None
    for name in ("vocab.json", "tokenizer_config.json"):
        if needs_tokenizer and not (folder / name).is_file():
            problems.append(f"no {name} (tokenizer)")
    if not ((folder / "preprocessor_config.json").is_file() or (folder / "processor_config.json").is_file()):
        problems.append("no preprocessor_config.json / processor_config.json (feature extractor)")
    if not (folder / "README.md").is_file():
        problems.append("no README.md (model card)")
    return problems


def save_code_files(model, folder: str | os.PathLike) -> list[Path]:
    """Copy the modeling code of ``model`` into ``folder``: the files of its class and of its config class and,
    recursively, their relative imports (transformers' ``custom_object_save``), checked by
    :func:`check_code_imports`. [] for transformers' own classes, which need no code."""
    for wrapper in ("module", "_orig_mod"):  # DDP, torch.compile
        model = getattr(model, wrapper, model)
    if type(model).__module__.startswith("transformers."):
        return []
    os.makedirs(folder, exist_ok=True)
    copied = [*(custom_object_save(model, folder) or []), *(custom_object_save(model.config, folder) or [])]
    copied = _unique(Path(path) for path in copied)
    check_code_imports(copied)
    return copied


class PushCodeFilesCallback(TrainerCallback):
    """Every push of the ``Trainer`` carries the code that config.json's ``auto_map`` names.

    With ``push_to_hub`` and a ``save_strategy``, the Trainer uploads ``output_dir`` at every checkpoint
    (``_push_from_checkpoint``): it copies only config.json and the weights from the checkpoint folder into
    ``output_dir``, so the first pushes published a config whose ``auto_map`` points at ``modeling.py`` and
    ``configuration.py`` that were not in the repository (``trust_remote_code`` loading failed until the end of
    training). ``on_push_begin`` runs before every upload, intermediate and final: the code is written into
    ``output_dir`` there. The checkpoint folders themselves (``hub_strategy="checkpoint"``) already hold the code,
    which ``save_pretrained`` writes for our registered classes.
    """

    def on_push_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and model is not None:
            save_code_files(model, args.output_dir)


def copy_model_card(folder: str | os.PathLike, name: str, model_cards_dir: str | os.PathLike = "model_cards") -> Path:
    """Copy ``folder/README.md`` to ``model_cards/<name>.md`` (the repository keeps a card per released model)."""
    destination = Path(model_cards_dir) / f"{name}.md"
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(folder) / "README.md", destination)
    return destination


def push_hub_folder(folder: str | os.PathLike, repo_id: str, *, token: str | None = None,
                    private: bool | None = None, commit_message: str = "Upload wav2vec 2.0 CTC model",
                    revision: str | None = None, create_pr: bool = False,
                    ignore_patterns: Sequence[str] = ("_*", "checkpoint-*", "runs/*")):
    """Create ``repo_id`` if needed and upload ``folder`` with ``huggingface_hub.HfApi.upload_folder`` (what
    ``Trainer.push_to_hub`` and ``model.push_to_hub`` call). Refuses an incomplete folder
    (:func:`check_hub_folder`). Returns the ``CommitInfo``."""
    problems = check_hub_folder(folder)
    if problems:
        raise ValueError(f"{folder} is not ready to push: " + "; ".join(problems))
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    return api.upload_folder(repo_id=repo_id, folder_path=os.fspath(folder), commit_message=commit_message,
                             revision=revision, create_pr=create_pr, ignore_patterns=list(ignore_patterns),
                             repo_type="model")
