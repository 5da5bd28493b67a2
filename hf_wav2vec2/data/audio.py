"""Audio decoding with soundfile and resampling with soxr, with one error type for every way a file can be bad.

Everything here works on a *source*: a path, raw encoded bytes, or the ``{"path": ..., "bytes": ...}`` dict that
``datasets.Audio(decode=False)`` gives (bytes win when present). Decoding returns 1-D float32 mono at ``target_sr``.
:func:`example_waveform` is the one way the dataset and the collators turn an *example* (a dataset row, or a mapping
that already holds ``input_values``) into a checked waveform.

Samples must be finite and at most :data:`MAX_ABS_AMPLITUDE` in magnitude. Integer PCM decodes to [-1, 1); only
float files can hold more. Float audio is written in [-1, 1], some tools write it at the 16-bit integer scale
(+-32768: the feature extractor's normalisation, or the model's own, absorbs that), but larger peaks (1e30 in a
corrupt file) are no audio in any scale: the per-utterance variance overflows float32 and the utterance trains as
zeros. Such files are rejected (``AudioError``), so that training and evaluation skip and log them.

Decoding takes ``min_samples``, the shortest usable waveform. Its default, 1, only rejects empty audio: a training
or evaluation caller passes the model's receptive field (``W2V2Config.receptive_field``, 400 samples for every
preset), since shorter audio yields no frame.
"""

import io
import os
from collections.abc import Mapping

import numpy as np
import soundfile as sf
import soxr

from ..configuration import SAMPLING_RATE

AudioSource = str | os.PathLike | bytes | Mapping
# The largest sample magnitude accepted: the 16-bit integer scale that some tools write float audio in.
MAX_ABS_AMPLITUDE = 32768.0


class AudioError(ValueError):
    """An audio source that cannot be used; ``source`` names it (a path, or ``<bytes>``) and ``reason`` says why."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def source_name(source: AudioSource) -> str:
    """A printable name for a source: its path, or ``<bytes>`` for anonymous encoded bytes."""
    if isinstance(source, Mapping):
        return str(source.get("path") or "<bytes>")
    if isinstance(source, (bytes, bytearray)):
        return "<bytes>"
    return os.fspath(source)


def _open_target(source: AudioSource):
    """What soundfile should open: a path, or a BytesIO over encoded bytes."""
    if isinstance(source, Mapping):
        if source.get("bytes"):
            return io.BytesIO(source["bytes"])
        if source.get("path"):
            return _existing_file(source["path"])
        raise AudioError("<dict>", "neither 'bytes' nor 'path' is set")
    if isinstance(source, (bytes, bytearray)):
        return io.BytesIO(source)
    return _existing_file(source)


def _existing_file(path) -> str:
    # libsndfile reports a missing file as "System error": say what is wrong before it opens anything.
    path = os.fspath(path)
    if os.path.isdir(path):
        raise AudioError(path, "is a folder, not an audio file")
    if not os.path.exists(path):
        raise AudioError(path, "no such file")
    return path


def check_samples(samples: np.ndarray, name: str) -> None:
    """Raise ``AudioError`` for NaN/inf samples or a peak magnitude above :data:`MAX_ABS_AMPLITUDE`."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0  # NaN and inf propagate through the max
    # Float WAV/FLAC can carry NaN or inf; one such sample turns every activation of the utterance into NaN.
    if not np.isfinite(peak):
        raise AudioError(name, "contains NaN or infinite samples")
    if peak > MAX_ABS_AMPLITUDE:
        raise AudioError(name, f"peak magnitude {peak:.3g} is above {MAX_ABS_AMPLITUDE:g}: not audio in any scale "
                               "(float audio lies in [-1, 1]; a corrupt or mis-scaled float file?)")


def audio_info(source: AudioSource) -> tuple[int, int, int]:
    """``(file_samples, sampling_rate, channels)`` read from the header only (no decoding), via ``soundfile.info``.

    Raises ``AudioError`` when the file cannot be opened or parsed. For MP3 the frame count is an estimate.
    """
    name = source_name(source)
    try:
        info = sf.info(_open_target(source))
    except AudioError:
        raise
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError, TypeError, OSError ...
        raise AudioError(name, f"unreadable ({type(error).__name__}: {error})") from error
    return int(info.frames), int(info.samplerate), int(info.channels)


def resampled_length(num_samples: int, sampling_rate: int, target_sr: int) -> int:
    """Number of samples ``soxr.resample`` returns for ``num_samples`` at ``sampling_rate`` -> ``target_sr``.

    soxr rounds ``num_samples * target_sr / sampling_rate`` half up; integer arithmetic keeps it exact.
    """
    if sampling_rate == target_sr:
        return num_samples
    return (2 * num_samples * target_sr + sampling_rate) // (2 * sampling_rate)


def decode_audio(
    source: AudioSource,
    target_sr: int = SAMPLING_RATE,
    *,
    min_samples: int = 1,
    max_channels: int | None = None,
) -> np.ndarray:
    """Decode a source to a mono float32 waveform at ``target_sr``.

    Args:
        source: a path, encoded bytes, or a ``{"path", "bytes"}`` dict (``datasets.Audio(decode=False)``).
        target_sr: output sampling rate; other rates are resampled with soxr (high quality).
        min_samples: reject waveforms shorter than this after resampling (pass the model's receptive field).
        max_channels: reject files with more channels than this; ``None`` accepts any count.

    Returns:
        ``(num_samples,)`` float32, in [-1, 1] for integer PCM (channels averaged to mono).

    Raises:
        AudioError: no such file, unreadable or truncated file, no samples, too many channels, NaN/inf samples or a
            peak above ``MAX_ABS_AMPLITUDE``, too short.
    """
    name = source_name(source)
    try:
        # always_2d gives (frames, channels) for mono and multi-channel files alike.
        samples, sampling_rate = sf.read(_open_target(source), dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as error:
        raise AudioError(name, f"unreadable ({type(error).__name__}: {error})") from error
    file_samples, channels = samples.shape
    if file_samples == 0:
        raise AudioError(name, "empty (no samples)")
    if max_channels is not None and channels > max_channels:
        raise AudioError(name, f"has {channels} channels, expected at most {max_channels}")
    check_samples(samples, name)
    waveform = samples.mean(axis=1) if channels > 1 else samples[:, 0]  # (frames,)
    if sampling_rate != target_sr:
        waveform = soxr.resample(waveform, sampling_rate, target_sr, quality="HQ")
    if len(waveform) < min_samples:
        raise AudioError(name, f"too short: {len(waveform)} samples at {target_sr} Hz (< {min_samples})")
    return np.ascontiguousarray(waveform, dtype=np.float32)


def example_source(example: Mapping) -> AudioSource:
    """What to decode for a row of ``load_speech_dataset``: the Hub ``audio`` dict if it holds bytes, else ``path``."""
    audio = example.get("audio")
    if isinstance(audio, Mapping) and audio.get("bytes"):
        return {"path": audio.get("path") or example.get("path") or example.get("id"), "bytes": audio["bytes"]}
    return example["path"]


def example_waveform(
    example: Mapping,
    target_sr: int = SAMPLING_RATE,
    *,
    min_samples: int = 1,
    max_channels: int | None = None,
) -> np.ndarray:
    """The ``(num_samples,)`` float32 waveform of an example, checked as :func:`decode_audio` checks a file.

    Takes ``input_values`` when the example has them (a 1-D array or tensor, already at ``target_sr``), else decodes
    :func:`example_source` (``audio`` bytes or ``path``) at ``target_sr``.

    Raises:
        AudioError: named by the decoded path, or for given ``input_values`` by the example's ``id`` (else its
            ``path``, else ``<example>``): undecodable, NaN/inf samples or an absurd peak, shorter than
            ``min_samples``, ...
    """
    if example.get("input_values") is None:
        return decode_audio(example_source(example), target_sr, min_samples=min_samples, max_channels=max_channels)
    name = str(example.get("id") or example.get("path") or "<example>")
    waveform = np.asarray(example["input_values"], dtype=np.float32).reshape(-1)  # CPU tensors convert too
    if len(waveform) < min_samples:
        raise AudioError(name, f"too short: {len(waveform)} samples (< {min_samples})")
    check_samples(waveform, name)
    return waveform
