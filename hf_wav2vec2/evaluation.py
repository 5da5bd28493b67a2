"""Evaluation of a CTC model on a dataset: transcripts of every utterance by each decoder, and corpus WER / CER.

- :func:`transcribe_dataset`: logits for every row of a ``load_speech_dataset`` dataset, decoded by each decoder.
- :func:`chunked_logits`: the logits of one long utterance, computed chunk by chunk.
- :func:`error_rates`: corpus WER and CER with the package's offline ``evaluate`` metrics.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import AudioDataset
from .decoding import output_frame_lengths
from .frames import receptive_field


def transcribe_dataset(
    model,
    processor,
    dataset,
    decoders: Mapping[str, Callable[[torch.Tensor, torch.Tensor], list[str]]],
    *,
    batch_size: int = 8,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    max_duration_s: float | None = None,
    progress: bool = False,
) -> Iterable[dict]:
    """Yield ``{"id", "reference", <decoder name>: hypothesis, ...}`` for every decodable row of a
    ``load_speech_dataset`` dataset (rows are batched longest first, so the largest batch comes first).

    max_duration_s: an utterance longer than this runs alone, through :func:`chunked_logits` in chunks of this
    length (a sixth of it as context on each side), and its joined logits are decoded as one: memory is that of
    one such chunk, however long the file. None: every utterance in one pass.

    progress: a tqdm progress bar over the batches (on stderr).

    decoders: name -> ``f(logits (B, T, V), frame lengths (B,)) -> texts``, e.g.
    ``{"greedy": lambda logits, frames: greedy_decode(logits.argmax(-1), tokenizer, frames)}``. The feature
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

    # each long utterance makes a batch of its own, the others are batched as they come
    max_samples = int(max_duration_s * feature_extractor.sampling_rate) if max_duration_s else None
    num_samples = dataset["num_samples"]
    long = [i for i in order if max_samples is not None and num_samples[i] > max_samples]
    rest = [i for i in order if max_samples is None or num_samples[i] <= max_samples]
    batches = [[i] for i in long] + [rest[i:i + batch_size] for i in range(0, len(rest), batch_size)]
    loader = torch.utils.data.DataLoader(audio, batch_sampler=batches, collate_fn=collate, num_workers=num_workers)
    model.eval()
    dtype = next(model.parameters()).dtype
    for packed in tqdm(loader, desc="transcribing", unit="batch", disable=not progress):
        if packed is None:
            continue
        items, batch = packed
        inputs = batch["input_values"].to(device, dtype=dtype)
        if max_samples is not None and inputs.shape[-1] > max_samples:  # one long utterance, unpadded
            logits = chunked_logits(model, inputs, max_samples).float()  # (1, T, V)
            frames = torch.tensor([logits.shape[1]])
        else:
            mask = batch["attention_mask"].to(device) if use_mask else None
            with torch.inference_mode():
                outputs = model(inputs, attention_mask=mask)
            logits = outputs.logits.float()  # (B, T, V)
            frames = output_frame_lengths(model, outputs, batch["attention_mask"].sum(-1))  # (B,)
        texts = {name: decode(logits, frames) for name, decode in decoders.items()}
        for i, item in enumerate(items):
            yield {"id": item["id"], "reference": item["text"], **{name: texts[name][i] for name in decoders}}


def chunked_logits(model, input_values: torch.Tensor, chunk_samples: int,
                   stride_samples: int | None = None) -> torch.Tensor:
    """The (1, T, V) logits of one long utterance (input_values: (1, L), normalised already), computed chunk by
    chunk: the frames of one pass, T = the model's frame count for L, each taken from a chunk that holds at least
    ``stride_samples`` (default: a sixth of the chunk) of context on both sides of it (less at the ends of the
    utterance). Chunks start on multiples of the model's hop (``inputs_to_logits_ratio``), so that their frames are
    frames of the whole utterance; the last chunk ends at the utterance's end. A model whose frames see less than the
    stride gives exactly the logits of one pass."""
    hop = model.config.inputs_to_logits_ratio
    length = input_values.shape[-1]
    chunk = max(hop, chunk_samples // hop * hop)
    stride = (stride_samples if stride_samples is not None else chunk // 6) // hop * hop
    if chunk <= 2 * stride:
        raise ValueError(f"chunks of {chunk} samples leave nothing between strides of {stride} samples")
    pieces, next_frame, start = [], 0, 0  # next_frame: the first frame of the utterance not taken yet
    with torch.inference_mode():
        while True:
            is_last = start + chunk >= length
            logits = model(input_values[:, start:start + chunk]).logits  # (1, t, V)
            first = start // hop  # the utterance's frame of the chunk's frame 0
            end = first + logits.shape[1] if is_last else first + (chunk - stride) // hop
            pieces.append(logits[:, next_frame - first:end - first])
            if is_last:
                return torch.cat(pieces, dim=1)  # (1, T, V)
            next_frame = end
            start += chunk - 2 * stride
            if start + chunk >= length:  # the last chunk: a whole one, ending at the utterance's end
                start = min(start, -(-(length - chunk) // hop) * hop)


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
