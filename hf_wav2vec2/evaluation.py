"""Evaluation of a CTC model on a dataset: transcripts of every utterance by each decoder, and corpus WER / CER.

- :func:`transcribe_dataset`: logits for every row of a ``load_speech_dataset`` dataset, decoded by each decoder.
- :func:`error_rates`: corpus WER and CER with the package's offline ``evaluate`` metrics.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from .data import AudioDataset
from .decoding import output_frame_lengths
from .feature_encoder import receptive_field


def transcribe_dataset(
    model,
    processor,
    dataset,
    decoders: Mapping[str, Callable[[torch.Tensor, torch.Tensor], list[str]]],
    *,
    batch_size: int = 8,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> Iterable[dict]:
    """Yield ``{"id", "reference", <decoder name>: hypothesis, ...}`` for every decodable row of a
    ``load_speech_dataset`` dataset (rows are batched longest first, so the largest batch comes first).

    decoders: name -> ``f(logits (B, T, V), frame lengths (B,)) -> texts``, e.g.
    ``{"greedy": lambda logits, lengths: greedy_decode(logits.argmax(-1), tokenizer, lengths)}``. The feature
    extractor pads and normalises each utterance; the attention mask goes to the model when the feature extractor
    asks for one or the model is ours (which never lets padding change its outputs).
    """
    feature_extractor = processor.feature_extractor
    order = np.argsort(-np.asarray(dataset["num_samples"]), kind="stable").tolist()
    # audio shorter than the model's receptive field gives no frame: dropped (logged) like an unreadable file
    audio = AudioDataset(dataset, feature_extractor.sampling_rate,
                         min_samples=receptive_field(model.config.conv_kernel, model.config.conv_stride))
    use_mask = bool(feature_extractor.return_attention_mask) or model.config.model_type == "w2v2"

    def collate(items):
        items = [item for item in items if item is not None]
        if not items:
            return None
        batch = feature_extractor([item["input_values"] for item in items], sampling_rate=audio.target_sr,
                                  padding=True, return_attention_mask=True, return_tensors="pt")
        return items, batch

    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    loader = torch.utils.data.DataLoader(audio, batch_sampler=batches, collate_fn=collate, num_workers=num_workers)
    model.eval()
    dtype = next(model.parameters()).dtype
    for packed in loader:
        if packed is None:
            continue
        items, batch = packed
        inputs = batch["input_values"].to(device, dtype=dtype)
        mask = batch["attention_mask"].to(device) if use_mask else None
        with torch.inference_mode():
            outputs = model(inputs, attention_mask=mask)
        logits = outputs.logits.float()  # (B, T, V)
        frames = output_frame_lengths(model, outputs, batch["attention_mask"].sum(-1))  # (B,)
        texts = {name: decode(logits, frames) for name, decode in decoders.items()}
        for i, item in enumerate(items):
            yield {"id": item["id"], "reference": item["text"], **{name: texts[name][i] for name in decoders}}


def error_rates(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Corpus WER and CER (total edits over total reference words / characters), fractions, from the ``wer`` and
    ``cer`` evaluate metrics shipped in ``hf_wav2vec2.metrics`` (offline)."""
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
    if not references:
        raise ValueError("no utterances to score")
    if any(not r.strip() for r in references):
        raise ValueError("empty reference transcript(s): leave such utterances out")
    return {name: float(_metric(name).compute(references=list(references), predictions=list(predictions)))
            for name in ("wer", "cer")}


@functools.cache
def _metric(name: str):
    from .metrics import load_metric

    return load_metric(name)
