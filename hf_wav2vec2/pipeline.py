"""The ASR pipeline: transformers' ``automatic-speech-recognition`` pipeline, with audio read without FFmpeg.

- :func:`load_audio`: a path or encoded bytes -> the ``{"raw", "sampling_rate"}`` dict transformers' pipeline takes.
- :class:`SpeechRecognitionPipeline` / :func:`asr_pipeline`: transformers' pipeline, except that paths and bytes are
  decoded with soundfile and other sampling rates resampled with soxr (transformers sends paths and bytes to the
  ``ffmpeg`` program and resamples with torchaudio), and that the padded frames of a batch decode as blank.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import soxr
import torch
from transformers import AutomaticSpeechRecognitionPipeline, pipeline

from .configuration import SAMPLING_RATE
from .data import decode_audio
from .decoding import output_frame_lengths
from .feature_encoder import receptive_field


def load_audio(source, sampling_rate: int = SAMPLING_RATE) -> dict:
    """A path, encoded bytes or ``{"path", "bytes"}`` dict -> ``{"raw": (samples,) float32 mono, "sampling_rate"}``,
    decoded with soundfile and resampled with soxr: what transformers' pipeline accepts without FFmpeg."""
    return {"raw": decode_audio(source, sampling_rate), "sampling_rate": sampling_rate}


class SpeechRecognitionPipeline(AutomaticSpeechRecognitionPipeline):
    """transformers' ASR pipeline, with audio decoding that needs neither FFmpeg nor torchaudio.

    Paths, URLs and encoded bytes are decoded with soundfile (WAV, FLAC, OGG, MP3; channels averaged) and
    ``{"raw"/"array", "sampling_rate"}`` dicts at another rate resampled with soxr. In a padded batch (``batch_size``
    > 1) the frames past each utterance's end are decoded as blanks: transformers' pipeline decodes them as speech.
    Everything else (chunking, strides, timestamps) is transformers' own.
    """

    def _forward(self, model_inputs, return_timestamps=False, **kwargs):
        # transformers decodes every frame of a padded batch (and, for a padded last chunk, one frame past its end:
        # its stride counts round(samples / inputs_to_logits_ratio) frames); frames past an utterance's end become
        # blanks here. transformers' _forward keeps only the argmax ids of the model's outputs: a forward hook
        # keeps the outputs, which carry the real frame counts.
        mask = model_inputs.get("attention_mask")  # (B, L); transformers' _forward pops it
        outputs = []
        hook = self.model.register_forward_hook(lambda module, args, output: outputs.append(output))
        try:
            out = super()._forward(model_inputs, return_timestamps=return_timestamps, **kwargs)
        finally:
            hook.remove()
        if self.type == "ctc":
            tokens = out["tokens"]  # (B, T)
            sample_lengths = mask.sum(-1) if mask is not None else None
            frames = output_frame_lengths(self.model, outputs[0], sample_lengths).to(tokens.device)  # (B,)
            padded = torch.arange(tokens.shape[-1], device=tokens.device) >= frames[:, None]  # (B, T)
            out["tokens"] = tokens.masked_fill(padded, self.tokenizer.pad_token_id)
        return out

    def preprocess(self, inputs, chunk_length_s=0, stride_length_s=None):
        yield from super().preprocess(self._decode(inputs), chunk_length_s=chunk_length_s,
                                      stride_length_s=stride_length_s)

    def _decode(self, inputs):
        rate = self.feature_extractor.sampling_rate
        if isinstance(inputs, str) and inputs.startswith(("http://", "https://")):
            import httpx

            inputs = httpx.get(inputs, follow_redirects=True).content
        if isinstance(inputs, (str, os.PathLike, bytes, bytearray)):
            # a file shorter than the model's receptive field gives no frame: say so with its name
            config = self.model.config
            return decode_audio(inputs, rate, min_samples=receptive_field(config.conv_kernel, config.conv_stride))
        if isinstance(inputs, Mapping) and "sampling_rate" in inputs and inputs["sampling_rate"] != rate:
            inputs = dict(inputs)
            stride = inputs.pop("stride", None)
            array = inputs.pop("raw", None)
            if array is None:
                inputs.pop("path", None)
                array = inputs.pop("array")
            if isinstance(array, torch.Tensor):
                array = array.cpu().numpy()
            array = np.asarray(array, dtype=np.float32)
            if array.ndim == 2 and array.shape[0] <= 2:  # (channels, samples), as transformers reads it
                array = array.mean(axis=0)
            elif array.ndim != 1:
                raise ValueError(f"expected (samples,) or (channels <= 2, samples) audio, got shape {array.shape}")
            source_rate = inputs.pop("sampling_rate")
            resampled = {**inputs, "raw": soxr.resample(array, source_rate, rate, quality="HQ"),
                         "sampling_rate": rate}
            if stride is not None:
                ratio = rate / source_rate
                resampled["stride"] = (int(round(stride[0] * ratio)), int(round(stride[1] * ratio)))
            return resampled
        return inputs


def asr_pipeline(model, **kwargs) -> SpeechRecognitionPipeline:
    """``pipeline("automatic-speech-recognition", model=model, pipeline_class=SpeechRecognitionPipeline, ...)``."""
    return pipeline("automatic-speech-recognition", model=model, pipeline_class=SpeechRecognitionPipeline, **kwargs)
