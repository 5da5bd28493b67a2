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
with :func:`push_hub_folder` instead.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from transformers.dynamic_module_utils import custom_object_save, get_imports

# Top-level packages the copied modeling code may import besides the standard library: what every transformers
# user has installed.
ALLOWED_CODE_IMPORTS = frozenset({"torch", "transformers", "huggingface_hub"})
# Auto class of each head; every folder also maps AutoConfig and AutoModel (the base model loads from any head).
HEAD_AUTO_CLASSES = {"W2V2ForCTC": "AutoModelForCTC", "W2V2ForPreTraining": "AutoModelForPreTraining"}
CARD_TAGS = ("automatic-speech-recognition", "wav2vec2", "hf_wav2vec2")
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

    dataset_type: Hub dataset id (``openslr/librispeech_asr``); dataset_name: display name (``LibriSpeech
    test-clean``); split: ``test``; dataset_config: ``clean`` or None; decoding: ``greedy`` or e.g. ``4-gram LM,
    beam 500``.
    """

    dataset_type: str
    dataset_name: str
    split: str
    wer: float
    cer: float
    dataset_config: str | None = None
    decoding: str = "greedy"


@dataclass
class ModelCardInfo:
    """What the model card says beyond what the model and processor carry.

    model_name: the ``model-index`` name (usually the repo name). repo_id: used in the usage snippets (defaults to
    model_name). pretraining / finetuning: hyper-parameters of the recipe, written as tables in the given order
    (e.g. ``{"updates": 400000, "peak LR": 5e-4, ...}``). base_model: the pretrained checkpoint fine-tuned, if it is
    on the Hub.
    """

    model_name: str
    language: str | list[str] = "en"
    license: str = "apache-2.0"
    datasets: list[str] = field(default_factory=list)
    results: list[ASRResult] = field(default_factory=list)
    pretraining: dict = field(default_factory=dict)
    finetuning: dict = field(default_factory=dict)
    description: str = ""
    repo_id: str | None = None
    base_model: str | None = None

    @classmethod
    def from_dict(cls, values: Mapping) -> ModelCardInfo:
        values = dict(values)
        values["results"] = [r if isinstance(r, ASRResult) else ASRResult(**r) for r in values.get("results", [])]
        return cls(**values)


def build_model_card(info: ModelCardInfo, model=None) -> ModelCard:
    """The card: YAML front matter with ``model-index`` (WER and CER per dataset and decoding), the recipe, the
    architecture (when ``model`` is given), usage snippets and the citation."""
    eval_results = []
    for r in info.results:
        for metric in ("wer", "cer"):
            eval_results.append(EvalResult(
                task_type="automatic-speech-recognition", task_name="Automatic Speech Recognition",
                dataset_type=r.dataset_type, dataset_name=r.dataset_name, dataset_split=r.split,
                dataset_config=r.dataset_config, metric_type=metric, metric_value=round(100 * getattr(r, metric), 2),
                metric_name=f"{r.split} {metric.upper()} ({r.decoding})",
            ))
    data = ModelCardData(
        language=info.language, license=info.license, library_name="transformers", tags=list(CARD_TAGS),
        datasets=list(info.datasets) or None, metrics=["wer", "cer"], base_model=info.base_model,
        pipeline_tag="automatic-speech-recognition", model_name=info.model_name, eval_results=eval_results or None,
    )
    repo = info.repo_id or info.model_name
    sections = [f"# {info.model_name}", _intro(info)]
    if info.results:
        rows = [f"| {r.dataset_name} | {r.split} | {r.decoding} | {100 * r.wer:.2f} | {100 * r.cer:.2f} |"
                for r in info.results]
        sections.append("## Results\n\n| dataset | split | decoding | WER % | CER % |\n|---|---|---|---|---|\n"
                        + "\n".join(rows))
    sections.append(_usage(repo))
    recipe = ["## Training recipe"]
    for title, values in (("Pretraining (self-supervised)", info.pretraining), ("CTC fine-tuning", info.finetuning)):
        if values:
            recipe.append(f"### {title}\n\n| hyper-parameter | value |\n|---|---|\n"
                          + "\n".join(f"| {k} | {v} |" for k, v in values.items()))
    if len(recipe) > 1:
        sections.append("\n\n".join(recipe))
    if model is not None:
        sections.append(_architecture(model))
    sections.append(f"## Citation\n\n```bibtex\n{CITATION}\n```")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def finetuned_model_card_info(args, training_args, recipe_name: str, recipe: Mapping, train_hours: float,
                              results: Mapping[str, Mapping[str, float]]) -> ModelCardInfo:
    """The card of a model fine-tuned by ``train_ctc.py``: greedy WER/CER of every evaluated split, the recipe
    actually used and, for a model pretrained by ``train_pretrain.py``, its pretraining record.

    ``args`` and ``training_args`` are train_ctc.py's arguments; ``results`` maps each evaluated split to the
    Trainer's metrics (``eval_wer``/``eval_cer`` for ``args.eval_split``, ``test_wer``/``test_cer`` otherwise).
    """
    eval_source = _dataset_id(args.eval_dataset or args.dataset)
    asr_results = [
        ASRResult(dataset_type=eval_source, dataset_name=f"{eval_source} {split}", split=split,
                  wer=metrics[f"{'eval' if split == args.eval_split else 'test'}_wer"],
                  cer=metrics[f"{'eval' if split == args.eval_split else 'test'}_cer"])
        for split, metrics in results.items()
    ]
    finetuning = {"recipe": recipe_name, "training data": f"{_dataset_id(args.dataset)} {args.split or ''}".strip(),
                  "hours of labelled audio": f"{train_hours:.2f}", **recipe,
                  "LR schedule": "tri-stage (10% warm-up, 40% hold, 50% decay to 0.05x)",
                  "Adam betas, eps": f"(0.9, {training_args.adam_beta2}), {training_args.adam_epsilon}"}
    pretraining = {}
    history = os.path.join(args.model_name_or_path, "train_history.json")
    if os.path.exists(history):
        with open(history) as handle:
            record = json.load(handle)
        pretraining = {"checkpoint": args.model_name_or_path, "updates": len(record.get("history", [])),
                       "hours of audio seen": f"{record.get('seen_audio_h', 0.0):.2f}",
                       "skipped updates": record.get("skipped_updates", 0)}
    name = os.path.basename(os.path.abspath(training_args.output_dir))
    return ModelCardInfo(model_name=name, repo_id=training_args.hub_model_id or name, results=asr_results,
                         pretraining=pretraining, finetuning=finetuning,
                         base_model=None if os.path.exists(args.model_name_or_path) else args.model_name_or_path)


def _dataset_id(sources: Sequence[str]) -> str:
    """A Hub dataset name as given; a local folder by its name, or as the synthetic corpus it is (corpus.json,
    written by ``hf_wav2vec2.corpus``): never "LibriSpeech" for speech that only has LibriSpeech's layout."""
    names = []
    for source in sources:
        if not os.path.exists(source):
            names.append(source)
        elif os.path.exists(os.path.join(source, "corpus.json")):
            names.append("hf_wav2vec2 synthetic corpus (eSpeak NG)")
        else:
            names.append(os.path.basename(os.path.abspath(source)))
    return ", ".join(names)


def _intro(info: ModelCardInfo) -> str:
    text = (f"wav2vec 2.0 ([Baevski et al., 2020]({PAPER_URL})) with a CTC head, trained with "
            "hf_wav2vec2 (a from-scratch implementation inside the Hugging Face ecosystem). "
            "Input: 16 kHz mono audio. Output: upper-case letters, apostrophe and word delimiter "
            "(LibriSpeech-normalised transcripts).")
    return f"{info.description.strip()}\n\n{text}" if info.description.strip() else text


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

With `pip install hf_wav2vec2`, `from hf_wav2vec2.pipeline import asr_pipeline` and `asr_pipeline("{repo}")` do this
themselves: that pipeline takes paths, bytes and arrays at any sampling rate.

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

Word error rates, greedy and with a KenLM n-gram (`pip install "hf_wav2vec2[lm]"`):

```bash
python evaluate_ctc.py --model {repo} --dataset /data/LibriSpeech --split test-clean \\
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
        "vocabulary": f"{cfg.vocab_size} (blank = pad = id {cfg.pad_token_id})",
    }
    return "## Architecture\n\n| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows.items())


# ------------------------------------------------------------------------------------------------- the folder
def save_hub_folder(model, processor, output_dir: str | os.PathLike, *,
                    card: ModelCardInfo | Mapping | None = None) -> Path:
    """Write everything a Hub repo of ``model`` needs into ``output_dir`` and return its path.

    1. ``model.safetensors`` + ``config.json`` (``model.save_pretrained``).
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
    model.save_pretrained(output_dir)
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
    for name in ("vocab.json", "tokenizer_config.json"):
        if config.get("vocab_size") is not None and not (folder / name).is_file():
            problems.append(f"no {name} (tokenizer)")
    if not ((folder / "preprocessor_config.json").is_file() or (folder / "processor_config.json").is_file()):
        problems.append("no preprocessor_config.json / processor_config.json (feature extractor)")
    if not (folder / "README.md").is_file():
        problems.append("no README.md (model card)")
    return problems


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
