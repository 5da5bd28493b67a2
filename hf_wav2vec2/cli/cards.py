"""The model cards the two training scripts write: :func:`build_model_card` renders a :class:`ModelCardInfo` (Hub
dataset ids in the metadata, local folders only in the text; language, ``model-index``, the recipe, the
per-evaluation log, usage, intended use and limitations, framework versions, citation). What each script puts into
one is in :mod:`.card_info`; the folder mechanics (weights, code, ``auto_map``, push) are in :mod:`hf_wav2vec2.hub`.

    card = build_model_card(ModelCardInfo(model_name="w2v2-base-10h", ...), model)
    save_hub_folder(model, processor, "hub/w2v2-base-10h", card=card)
    copy_model_card("hub/w2v2-base-10h", "w2v2-base-10h")     # -> model_cards/w2v2-base-10h.md
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

CARD_TAGS = ("automatic-speech-recognition", "wav2vec2", "hf_wav2vec2")
PRETRAINING_CARD_TAGS = ("wav2vec2", "hf_wav2vec2", "speech", "self-supervised-learning")
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
    languages = [info.language] if isinstance(info.language, str) else info.language
    language = ", ".join(languages) if languages else "not stated (no `--language` given)"
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
w2v2-train-ctc --model_name_or_path {repo} --dataset_name /data/librispeech_finetuning --train_split_name 10h \\
    --eval_dataset_name /data/LibriSpeech --eval_split_name dev-other --recipe 10h --output_dir runs/my-10h
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
w2v2-evaluate-ctc --model {repo} --dataset_name /data/LibriSpeech --eval_split_name test-clean \\
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


def copy_model_card(folder: str | os.PathLike, name: str, model_cards_dir: str | os.PathLike = "model_cards") -> Path:
    """Copy ``folder/README.md`` to ``model_cards/<name>.md`` (the repository keeps a card per released model)."""
    destination = Path(model_cards_dir) / f"{name}.md"
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(folder) / "README.md", destination)
    return destination
