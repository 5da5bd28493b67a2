"""Export to stock transformers: a folder with model_type ``wav2vec2`` that transformers' own classes load, without
``trust_remote_code`` and without this package (for inference services and machines that run no custom code).

    python -m hf_wav2vec2.export --format transformers --model runs/ctc-tiny --output_dir export/ctc-tiny

    from transformers import pipeline
    pipeline("automatic-speech-recognition", model="export/ctc-tiny")  # Wav2Vec2ForCTC, no remote code

Our parameter names and shapes are those of transformers' ``Wav2Vec2*`` classes, so the weights are copied as they
are; the config is transformers' ``Wav2Vec2Config`` with our training fields (``feature_grad_mult``, the Gumbel
schedule, ...) kept as extra keys that transformers ignores and :class:`W2V2Config` reads back. Every export is
checked: transformers' class loads the written folder and must give our logits on an unpadded input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from huggingface_hub import ModelCardData, metadata_load
from transformers import (
    AutoFeatureExtractor,
    AutoProcessor,
    Wav2Vec2Config,
    Wav2Vec2ForCTC,
    Wav2Vec2ForPreTraining,
    Wav2Vec2Model,
)

from .configuration import W2V2Config
from .modeling import W2V2ForCTC, W2V2ForPreTraining, W2V2Model, W2V2PreTrainedModel

# Our class -> transformers' class with the same parameters.
STOCK_CLASSES = {W2V2ForCTC: Wav2Vec2ForCTC, W2V2ForPreTraining: Wav2Vec2ForPreTraining, W2V2Model: Wav2Vec2Model}
OUR_CLASSES = {cls.__name__: cls for cls in STOCK_CLASSES} | {stock.__name__: ours for ours, stock in
                                                              STOCK_CLASSES.items()}
# transformers' conv-encoder norms use PyTorch's default eps, whatever config.layer_norm_eps says.
TORCH_NORM_EPS = 1e-5
CONFIG_KEYS_DROPPED = ("auto_map", "architectures", "model_type", "transformers_version")
CARD = """---
{metadata}
---

# {name}

wav2vec 2.0 ([Baevski et al., 2020](https://arxiv.org/abs/2006.11477)) trained with hf_wav2vec2 and exported to
transformers' own `wav2vec2` model type: `{stock_class}` loads it without `trust_remote_code`.

```python
from transformers import {auto_class}
model = {auto_class}.from_pretrained("{name}")
{pipeline_line}```

**Padded batches.** {padding_note}
"""
GROUP_NORM_NOTE = (
    "This model's conv encoder uses group norm (the BASE architecture). hf_wav2vec2 computes that norm over the real "
    "samples of each item only, so a padded batch gives every item the outputs it gets alone; transformers' "
    "Wav2Vec2 takes the statistics over the padding too, so with this export, outputs for padded items differ from "
    "hf_wav2vec2's (and depend on the batch). Unpadded inputs give the same outputs in both. For batched "
    "inference with transformers, run one utterance at a time or batch utterances of similar length; or install "
    "hf_wav2vec2 from its repository and load the original folder for padding-exact batches.")
LAYER_NORM_NOTE = ("This model's conv encoder uses layer norm: pass the processor's `attention_mask`, and padded "
                   "batches give the same outputs as hf_wav2vec2.")


def stock_config(config: W2V2Config, stock_class: type) -> Wav2Vec2Config:
    """transformers' ``Wav2Vec2Config`` of ``config``; ValueError for what transformers' classes compute otherwise."""
    problems = []
    if config.layer_norm_eps != TORCH_NORM_EPS:
        problems.append(f"layer_norm_eps={config.layer_norm_eps} (transformers' conv-encoder norms always use "
                        f"{TORCH_NORM_EPS})")
    if config.feat_extract_activation != "gelu":
        problems.append(f"feat_extract_activation={config.feat_extract_activation!r} (transformers applies it to "
                        "the positional convolution too, hf_wav2vec2 applies GELU there, as fairseq)")
    if stock_class is Wav2Vec2ForCTC and config.vocab_size is None:
        problems.append("vocab_size=None for a CTC model")
    if problems:
        raise ValueError("cannot export to transformers' wav2vec2: " + "; ".join(problems))
    values = {k: v for k, v in config.to_dict().items() if k not in CONFIG_KEYS_DROPPED}
    if values.get("vocab_size") is None:
        values.pop("vocab_size", None)  # a pretraining model: transformers' default, unused by its classes
    values["architectures"] = [stock_class.__name__]
    return Wav2Vec2Config(**values)


def load_our_model(source: str | os.PathLike) -> W2V2PreTrainedModel:
    """The model class named by ``source``'s config.json ``architectures`` (ours or transformers' names)."""
    config = W2V2Config.from_pretrained(source)
    name = (config.architectures or ["W2V2Model"])[0]
    if name not in OUR_CLASSES:
        raise ValueError(f"{source}: architecture {name!r} cannot be exported; expected one of {sorted(OUR_CLASSES)}")
    return OUR_CLASSES[name].from_pretrained(source)


# What the source folder's card says that stays true of the export (same weights): kept in the export's card.
CARRIED_METADATA = ("language", "license", "datasets", "base_model")


def _card_metadata(source: str | None, pipeline_tag: str) -> str:
    """The export card's YAML: transformers, the pipeline tag, our tags, and the source card's CARRIED_METADATA."""
    carried = {}
    if source is not None and os.path.isfile(os.path.join(source, "README.md")):
        carried = {k: v for k, v in (metadata_load(os.path.join(source, "README.md")) or {}).items()
                   if k in CARRIED_METADATA}
    return ModelCardData(library_name="transformers", pipeline_tag=pipeline_tag, tags=["wav2vec2", "hf_wav2vec2"],
                         **carried).to_yaml()


def export_to_transformers(model: W2V2PreTrainedModel | str | os.PathLike, output_dir: str | os.PathLike,
                           processor=None, *, verify: bool = True) -> Path:
    """Write ``model`` (or the model folder it names) as a stock transformers folder: config.json (model_type
    ``wav2vec2``), model.safetensors, the processor (``processor``, else the source folder's), README.md. With
    ``verify``, transformers' class reloads the folder and must reproduce our outputs on an unpadded input."""
    source = None
    if not isinstance(model, W2V2PreTrainedModel):
        source = os.fspath(model)
        model = load_our_model(source)
        if processor is None:
            processor = _source_processor(source)
    ours_class = next((c for c in STOCK_CLASSES if type(model) is c), None)
    if ours_class is None:
        raise TypeError(f"cannot export {type(model).__name__}: expected one of {[c.__name__ for c in STOCK_CLASSES]}")
    stock_class = STOCK_CLASSES[ours_class]
    config = stock_config(model.config, stock_class)

    # 1. transformers' model with our weights, every tensor accounted for
    stock = stock_class(config)
    missing, unexpected = stock.load_state_dict(model.state_dict(), strict=False)
    if missing or unexpected:
        raise ValueError(f"weights do not fit {stock_class.__name__}: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stock.save_pretrained(output_dir)
    # 2. processor (transformers' own classes) and card
    if processor is not None:
        processor.save_pretrained(output_dir)
    is_ctc = stock_class is Wav2Vec2ForCTC
    (output_dir / "README.md").write_text(CARD.format(
        name=output_dir.name, stock_class=stock_class.__name__,
        metadata=_card_metadata(source, "automatic-speech-recognition" if is_ctc else "feature-extraction"),
        auto_class="AutoModelForCTC" if is_ctc else
        ("AutoModelForPreTraining" if stock_class is Wav2Vec2ForPreTraining else "AutoModel"),
        pipeline_line=(f'\nfrom transformers import pipeline\npipeline("automatic-speech-recognition", '
                       f'model="{output_dir.name}")\n' if is_ctc else ""),
        padding_note=GROUP_NORM_NOTE if model.config.feat_extract_norm == "group" else LAYER_NORM_NOTE,
    ), encoding="utf-8")
    # 3. check: transformers' class, loaded from the folder, gives our outputs
    if verify:
        _verify(model, stock_class, output_dir)
    return output_dir


def _source_processor(source: str):
    """The source folder's processor, or its feature extractor, or None."""
    for loader in (AutoProcessor, AutoFeatureExtractor):
        try:
            return loader.from_pretrained(source)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _verify(model: W2V2PreTrainedModel, stock_class: type, folder: Path) -> None:
    reloaded = stock_class.from_pretrained(folder).eval()
    was_training = model.training
    model.eval()
    audio = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.wav2vec2 if not isinstance(model, W2V2Model) else model
        theirs = reloaded.wav2vec2 if not isinstance(reloaded, Wav2Vec2Model) else reloaded
        pairs = [(ours(audio).last_hidden_state, theirs(audio).last_hidden_state)]
        if isinstance(model, W2V2ForCTC):
            pairs.append((model(audio).logits, reloaded(audio).logits))
    model.train(was_training)
    for mine, stock in pairs:
        scale = float(mine.abs().max().clamp_min(1.0))
        error = float((mine - stock).abs().max())
        if error > 1e-4 * scale:
            raise RuntimeError(f"export check failed: {stock_class.__name__} from {folder} differs from our model "
                               f"by {error:.3g} (max |output| {scale:.3g})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hf_wav2vec2.export", description=__doc__.split("\n")[0])
    parser.add_argument("--format", choices=["transformers"], default="transformers",
                        help="transformers: model_type wav2vec2, loaded by transformers' own Wav2Vec2 classes")
    parser.add_argument("--model", required=True, help="our model folder (save_pretrained / train_ctc.py output)")
    parser.add_argument("--output_dir", required=True, help="folder to write")
    parser.add_argument("--no_verify", action="store_true", help="skip reloading the export and comparing outputs")
    args = parser.parse_args(argv)
    folder = export_to_transformers(args.model, args.output_dir, verify=not args.no_verify)
    config = json.loads((folder / "config.json").read_text())
    print(f"wrote {folder}: model_type {config['model_type']}, {config['architectures'][0]}"
          + ("" if args.no_verify else ", outputs checked against transformers"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
