"""The data layer: decoding, LibriSpeech/Libri-light/folder/Hub loading, batching, collation, transcript normalisation
for any script.

Imports only torch, numpy, datasets, soundfile, soxr, transformers' processor classes and the standard library, and
from this package only ``configuration`` (``SAMPLING_RATE``) and ``loading`` (``looks_like_local_path``): never the
model modules, nor the synthetic corpus (``hf_wav2vec2.corpus``, which builds on this layer). Problems with
individual files are logged on the "hf_wav2vec2.data" logger.
"""

from .audio import AudioError, audio_info, decode_audio, example_waveform, resampled_length
from .batching import MaxTokensBatchSampler
from .collate import AudioDataset, PretrainingCollator
from .sources import LIBRI_LIGHT_SUBSETS, LoadReport, default_normalizer, from_hf_dataset, load_speech_dataset
from .text import LIBRISPEECH, TextNormalizer, normalize_transcript

__all__ = [
    "LIBRISPEECH", "LIBRI_LIGHT_SUBSETS", "AudioDataset", "AudioError", "LoadReport", "MaxTokensBatchSampler",
    "PretrainingCollator", "TextNormalizer", "audio_info", "decode_audio", "default_normalizer", "example_waveform",
    "from_hf_dataset", "load_speech_dataset", "normalize_transcript", "resampled_length",
]
