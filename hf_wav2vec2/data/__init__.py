"""The data layer: decoding, LibriSpeech/Libri-light/folder/Hub loading, batching, collation, the synthetic corpus.

Imports only torch, numpy, datasets, soundfile, soxr and the standard library (espeak-ng, for ``synth``, on first
use), never the model modules. Problems with individual files are logged on the "hf_wav2vec2.data" logger.
"""

from .audio import AudioError, audio_info, decode_audio, resampled_length
from .batching import MaxTokensBatchSampler
from .collate import AudioDataset, PretrainingCollator
from .sources import LIBRI_LIGHT_SUBSETS, LoadReport, from_hf_dataset, load_speech_dataset
from .synth import read_phones, synthesize_corpus
from .text import normalize_transcript

__all__ = [
    "LIBRI_LIGHT_SUBSETS", "AudioDataset", "AudioError", "LoadReport", "MaxTokensBatchSampler",
    "PretrainingCollator", "audio_info", "decode_audio", "from_hf_dataset", "load_speech_dataset",
    "normalize_transcript", "read_phones", "resampled_length", "synthesize_corpus",
]
