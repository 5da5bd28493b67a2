"""A minimal ctypes binding to libespeak-ng, as shipped by the ``espeakng-loader`` wheel (library + voice data).

Only what the synthetic corpus needs: synchronous synthesis of one utterance with a voice, rate and pitch, returning
the waveform and the phoneme timings espeak reports (``espeakEVENT_PHONEME``, espeak's ASCII phoneme mnemonics).

espeak-ng keeps state between utterances (glottal phase, a ``rand()`` stream seeded from the clock at start-up), so
the same text can come out a few samples different depending on what was said before. ``Synthesizer.synthesize``
reseeds libc's ``rand`` for every utterance; the caller makes output reproducible by synthesising a fixed sequence of
utterances in a fresh process (see ``synth.py``).
"""

import ctypes
import ctypes.util

import numpy as np

# Constants from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED, _EVENT_PHONEME = 0, 7
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):  # espeak_EVENT
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),  # samples since the start of the utterance
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class SynthesisError(RuntimeError):
    """espeak-ng failed on an utterance (bad voice, synthesis error, or no audio)."""


class Synthesizer:
    """espeak-ng in this process. The library has global state: create one per process (``get_synthesizer``)."""

    def __init__(self):
        try:
            import espeakng_loader  # the wheel that carries libespeak-ng and espeak-ng-data
        except ImportError as error:
            raise ImportError("the synthetic corpus needs eSpeak NG, the `corpus` extra: pip install '.[corpus]' in "
                              "a clone of hf_wav2vec2 (make setup installs every extra)") from error

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                           ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Info.restype = ctypes.c_char_p
        self._lib.espeak_Info.argtypes = [ctypes.c_void_p]
        data_path = espeakng_loader.get_data_path().encode()
        self.sample_rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path,
                                                       _INITIALIZE_PHONEME_EVENTS)
        if self.sample_rate <= 0:
            raise SynthesisError(f"espeak_Initialize failed ({self.sample_rate})")
        self.version = self._lib.espeak_Info(None).decode()
        libc_name = ctypes.util.find_library("c")
        self._srand = ctypes.CDLL(libc_name).srand if libc_name else None
        self._set_rand_seed = getattr(self._lib, "espeak_ng_SetRandSeed", None)
        if self._set_rand_seed is not None:
            self._set_rand_seed.argtypes = [ctypes.c_long]
        self._chunks: list[np.ndarray] = []
        self._phonemes: list[tuple[int, str]] = []  # (start sample, mnemonic)
        self._callback = _CALLBACK(self._collect)  # kept on self: ctypes must not garbage-collect it
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, num_samples, events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_PHONEME:
                self._phonemes.append((events[i].sample, events[i].id.string.decode("ascii", "replace")))
            i += 1
        return 0  # 0 = continue synthesis

    def synthesize(self, text: str, voice: str, *, rate: int = 175, pitch: int = 50, pitch_range: int = 50,
                   seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
        """Speak ``text``; returns ``(waveform, phonemes)``.

        Args:
            text: mixed-case text (all-capital words may be spelled letter by letter).
            voice: an espeak voice name with an optional variant, e.g. "en-us", "en+f2", "en-gb-scotland+m3".
            rate: words per minute (espeak 80-450, default 175).
            pitch, pitch_range: base pitch and intonation range, 0-100 (default 50).
            seed: seeds libc ``rand``, which espeak uses for small random variations.

        Returns:
            waveform: ``(num_samples,)`` float32 in [-1, 1] at ``self.sample_rate`` (22050 Hz).
            phonemes: ``(start_sample, end_sample, mnemonic)`` per phoneme in order, mnemonics as espeak reports
                them (stress marks included, "_" pauses); each ends where the next begins, the last at the end.

        Raises:
            SynthesisError: unknown voice, synthesis failure, or no audio produced.
        """
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise SynthesisError(f"unknown espeak voice {voice!r}")
        for parameter, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range),
                                 (_PARAM_VOLUME, 100)):
            self._lib.espeak_SetParameter(parameter, int(value), 0)
        # espeak-ng >= 1.52 draws breath noise from its own generator (seeded from the clock unless set here);
        # other variation goes through libc rand().
        if self._set_rand_seed is not None:
            self._set_rand_seed(seed & 0x7FFFFFFF)
        if self._srand is not None:
            self._srand(seed & 0xFFFFFFFF)
        self._chunks, self._phonemes = [], []
        encoded = text.encode("utf-8")
        status = self._lib.espeak_Synth(encoded, len(encoded) + 1, 0, 1, 0, _CHARS_UTF8, None, None)
        if status != 0 or self._lib.espeak_Synchronize() != 0:
            raise SynthesisError(f"espeak_Synth failed ({status}) on {text!r}")
        if not self._chunks:
            raise SynthesisError(f"espeak produced no audio for {text!r}")
        waveform = np.concatenate(self._chunks).astype(np.float32) / 32768.0
        starts = [min(start, len(waveform)) for start, _ in self._phonemes] + [len(waveform)]
        phonemes = [(starts[i], starts[i + 1], name) for i, (_, name) in enumerate(self._phonemes)]
        return waveform, phonemes


_SYNTHESIZER: Synthesizer | None = None


def get_synthesizer() -> Synthesizer:
    """The process's espeak-ng instance, created on first use."""
    global _SYNTHESIZER
    if _SYNTHESIZER is None:
        _SYNTHESIZER = Synthesizer()
    return _SYNTHESIZER
