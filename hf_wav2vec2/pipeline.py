"""The ASR pipeline: transformers' ``automatic-speech-recognition`` pipeline, with audio read without FFmpeg, long
inputs chunked by default, and beam search with a KenLM n-gram.

- :func:`load_audio`: a path or encoded bytes -> the ``{"raw", "sampling_rate"}`` dict transformers' pipeline takes.
- :class:`SpeechRecognitionPipeline` / :func:`asr_pipeline`: transformers' pipeline, except that paths and bytes are
  decoded with soundfile and other sampling rates resampled with soxr (transformers sends paths and bytes to the
  ``ffmpeg`` program and resamples with torchaudio), that the padded frames of a batch decode as blank, that inputs
  longer than ``max_duration_s`` are chunked unless the caller chose, and that ``kenlm_model=`` (or ``decoder=`` a
  :class:`~hf_wav2vec2.decoding.KenLMBeamSearchDecoder`) decodes with beam search and the LM.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping

import numpy as np
import soxr
import torch
from transformers import AutomaticSpeechRecognitionPipeline, pipeline

from .configuration import SAMPLING_RATE
from .data import decode_audio
from .decoding import KenLMBeamSearchDecoder, blank_padded_frames, output_frame_lengths
from .frames import frame_mask, receptive_field

# Inputs longer than this are cut into chunks of this length (with transformers' default stride, a sixth of it on
# each side): memory stays that of one such chunk, whatever the length of the input (a 1 h file included).
DEFAULT_MAX_DURATION_S = 60.0
_UNSET = object()
# The options of KenLMBeamSearchDecoder the pipeline takes when it is built (kenlm_model=...).
LM_OPTIONS = ("lexicon", "lexicon_free", "beam_size", "beam_size_token", "beam_threshold", "lm_weight", "word_score",
              "unk_score", "sil_score", "log_add")


def load_audio(source, sampling_rate: int = SAMPLING_RATE) -> dict:
    """A path, encoded bytes or ``{"path", "bytes"}`` dict -> ``{"raw": (samples,) float32 mono, "sampling_rate"}``,
    decoded with soundfile and resampled with soxr: what transformers' pipeline accepts without FFmpeg."""
    return {"raw": decode_audio(source, sampling_rate), "sampling_rate": sampling_rate}


class SpeechRecognitionPipeline(AutomaticSpeechRecognitionPipeline):
    """transformers' ASR pipeline, with audio decoding that needs neither FFmpeg nor torchaudio.

    Paths, URLs and encoded bytes are decoded with soundfile (WAV, FLAC, OGG, MP3; channels averaged) and
    ``{"raw"/"array", "sampling_rate"}`` dicts at another rate resampled with soxr. In a padded batch (``batch_size``
    > 1) the frames past each utterance's end are decoded as blanks: transformers' pipeline decodes them as speech.

    Long inputs: ``max_duration_s`` (default :data:`DEFAULT_MAX_DURATION_S`; at construction or per call): an input
    longer than this is run in chunks of ``chunk_length_s = max_duration_s``, with ``stride_length_s`` (default a
    sixth of it) of context on each side, unless the call sets ``chunk_length_s`` itself (``0``: one pass, however
    long). ``max_duration_s=None`` turns the automatic chunking off.

    Language model: ``kenlm_model`` (an ARPA or KenLM binary file) builds a
    :class:`~hf_wav2vec2.decoding.KenLMBeamSearchDecoder` from the pipeline's tokenizer with the options in
    :data:`LM_OPTIONS` (``beam_size``, ``lm_weight``, ``word_score``, ``lexicon``, ...), or ``decoder`` takes one
    built already. The logits of all chunks of an input are joined (strides cut off, as transformers does for its
    pyctcdecode ``decoder``) and decoded together, so chunked inputs decode as one. With the LM, timestamps are
    word timestamps (the frames of each word's letters on the best path), as in transformers. A pyctcdecode
    ``decoder`` goes to transformers' own code, unchanged.

    Chunking, strides and timestamps otherwise are transformers' own.
    """

    def __init__(self, model, *args, decoder=None, kenlm_model=None, **kwargs):
        lm_options = {name: kwargs.pop(name) for name in LM_OPTIONS if name in kwargs}
        if lm_options and kenlm_model is None:
            raise ValueError(f"{sorted(lm_options)}: language model options need kenlm_model=")
        if kenlm_model is not None and decoder is not None:
            raise ValueError("pass kenlm_model= (the pipeline builds the decoder) or decoder=, not both")
        theirs = decoder if decoder is not None and not isinstance(decoder, KenLMBeamSearchDecoder) else None
        super().__init__(model, *args, decoder=theirs, **kwargs)
        self.lm_decoder = decoder if isinstance(decoder, KenLMBeamSearchDecoder) else None
        if kenlm_model is not None:
            self.lm_decoder = KenLMBeamSearchDecoder.from_tokenizer(self.tokenizer, kenlm_model,
                                                                    vocab_size=self.model.config.vocab_size,
                                                                    **lm_options)
        if self.lm_decoder is not None and self.type != "ctc":
            raise ValueError(f"the KenLM decoder needs a CTC model, not {type(self.model).__name__}")
        if self.lm_decoder is not None and self._postprocess_params.get("return_timestamps") not in (None, "word"):
            raise ValueError("with the KenLM decoder, return_timestamps can only be 'word'")

    def _sanitize_parameters(self, max_duration_s=_UNSET, **kwargs):
        lm_options = sorted(set(kwargs) & {*LM_OPTIONS, "kenlm_model", "decoder"})
        if lm_options:  # transformers would pass unknown names on to the model's forward, which ignores them
            raise ValueError(f"{lm_options}: the language model and its options are set when the pipeline is built: "
                             "asr_pipeline(model, kenlm_model=..., beam_size=..., lm_weight=..., word_score=...)")
        if kwargs.get("return_timestamps") not in (None, False, "word") and getattr(self, "lm_decoder", None):
            raise ValueError("with the KenLM decoder, return_timestamps can only be 'word'")
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)
        if max_duration_s is not _UNSET:  # a call's value wins over the pipeline's; unset, neither is overwritten
            preprocess["max_duration_s"] = max_duration_s
        return preprocess, forward, postprocess

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
            out["tokens"] = tokens.masked_fill(~frame_mask(frames, tokens.shape[-1]), self.tokenizer.pad_token_id)
            if self.lm_decoder is not None:  # the beam search passes the padded frames without a cost
                out["logits"] = blank_padded_frames(outputs[0].logits.float(), frames, self.lm_decoder.blank)
        return out

    def preprocess(self, inputs, chunk_length_s=None, stride_length_s=None, max_duration_s=DEFAULT_MAX_DURATION_S):
        inputs = self._decode(inputs)
        if chunk_length_s is None:  # the caller did not choose: chunk what is longer than max_duration_s
            chunk_length_s = 0
            rate = self.feature_extractor.sampling_rate
            num_samples = _num_samples(inputs)
            caller_stride = isinstance(inputs, Mapping) and inputs.get("stride") is not None
            if max_duration_s and not caller_stride and num_samples is not None and num_samples > max_duration_s * rate:
                chunk_length_s = max_duration_s
        yield from super().preprocess(inputs, chunk_length_s=chunk_length_s, stride_length_s=stride_length_s)

    def postprocess(self, model_outputs, decoder_kwargs=None, return_timestamps=None, return_language=None):
        if self.lm_decoder is None:
            return super().postprocess(model_outputs, decoder_kwargs=decoder_kwargs,
                                       return_timestamps=return_timestamps, return_language=return_language)
        # the chunks' logits, strides cut off as transformers cuts them for its own LM decoder, decoded as one
        pieces, extra = [], defaultdict(list)
        for output in model_outputs:
            logits = output["logits"]  # (1, T, V)
            if output.get("stride") is not None:
                total, left, right = output["stride"]  # in frames
                logits = logits[:, left:total - right]
            pieces.append(logits)
            for key, value in output.items():
                if key not in ("logits", "tokens", "stride", "is_last"):
                    extra[key].append(value)
        ((text, word_frames),) = self.lm_decoder.decode_with_word_frames(torch.cat(pieces, dim=1))
        if return_timestamps:
            seconds = self._align_to / self.feature_extractor.sampling_rate  # per frame
            extra["chunks"] = [{"text": word, "timestamp": (first * seconds, end * seconds)}
                               for word, (first, end) in word_frames]
        return {"text": text, **extra}

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


def _num_samples(inputs) -> int | None:
    """Samples of a decoded input (an array, or a dict holding one), None when the input is of another kind."""
    if isinstance(inputs, Mapping):
        inputs = inputs.get("raw", inputs.get("array"))
    if isinstance(inputs, (np.ndarray, torch.Tensor)):
        return int(inputs.shape[-1])
    return None


def asr_pipeline(model, **kwargs) -> SpeechRecognitionPipeline:
    """``pipeline("automatic-speech-recognition", model=model, pipeline_class=SpeechRecognitionPipeline, ...)``.

    Besides transformers' arguments: ``max_duration_s`` (longer inputs are chunked), ``kenlm_model`` with the
    decoder options of :data:`LM_OPTIONS`, or ``decoder`` (see :class:`SpeechRecognitionPipeline`). Example:
    ``asr_pipeline("runs/ctc-tiny", kenlm_model="4-gram.arpa", beam_size=50, lm_weight=2.0, word_score=-1.0)``.
    """
    return pipeline("automatic-speech-recognition", model=model, pipeline_class=SpeechRecognitionPipeline, **kwargs)
