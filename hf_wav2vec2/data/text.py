"""Transcript normalisation: LibriSpeech's English style, or NFC text that keeps the letters of every script.

Two styles, one class (:class:`TextNormalizer`), so that a model's choice can be stored with its processor and read
back by everything that scores or builds labels (``hf_wav2vec2.data.ctc.processor_normalizer``):

* ``"librispeech"`` (:data:`LIBRISPEECH`, :func:`normalize_transcript`): upper-case A-Z, apostrophes and single
  spaces, accents stripped. What LibriSpeech and Libri-light transcripts are written in, and what their models use.
* ``"unicode"`` (the default ``TextNormalizer()``): any language. Unicode NFC (composed: ``é`` stays one character
  inside its word, Devanagari vowel signs stay after their consonant), the transformers speech examples'
  ``chars_to_ignore`` convention, and a choice of case.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass

# Curly quotes and the modifier letter apostrophe stand for the same apostrophe in a transcript.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_NOT_ALLOWED = re.compile(r"[^A-Z' ]+")
# Zero-width (non-)joiners change how Indic and Persian words are written: they are kept. Other format characters
# (byte-order mark, soft hyphen, directional marks) are invisible and dropped.
_KEPT_FORMAT = {"\u200c", "\u200d"}
STYLES = ("unicode", "librispeech")
CASES = ("lower", "upper", "keep")


def normalize_transcript(text: str) -> str:
    """Normalise a transcript the way LibriSpeech's are written (English only: see :class:`TextNormalizer` for
    other languages).

    Accents are stripped inside words (``naïve café`` -> ``NAIVE CAFE``), everything is upper-cased, every character
    other than A-Z and the apostrophe becomes a space (``well-pleased`` -> ``WELL PLEASED``; digits and punctuation
    disappear), tokens made only of apostrophes are dropped and whitespace is collapsed to single spaces. Apostrophes
    at a word's edge are kept (``'TWAS``, ``BROTHERS'``), as in LibriSpeech, so an already normalised LibriSpeech
    line is unchanged.

    Example: ``normalize_transcript("And God said, Let there be light.")`` -> ``"AND GOD SAID LET THERE BE LIGHT"``.
    """
    # NFKD splits "é" into "e" + a combining accent; dropping the accent (not turning it into a space, as the filter
    # below would) keeps the word whole: "naïve" -> "NAIVE", not "NAI VE".
    text = unicodedata.normalize("NFKD", text).translate(_APOSTROPHES)
    text = "".join(c for c in text if not unicodedata.combining(c)).upper()
    words = _NOT_ALLOWED.sub(" ", text).split()
    return " ".join(word for word in words if word.strip("'"))


@dataclass(frozen=True)
class TextNormalizer:
    """How transcripts are written for a CTC model: the same function builds the vocabulary, the labels, and the
    references and hypotheses that WER/CER compare.

    Args:
        style: ``"unicode"`` (any language, described below) or ``"librispeech"`` (:func:`normalize_transcript`;
            takes no other option).
        chars_to_ignore: characters **deleted** from the text, as the transformers examples' ``--chars_to_ignore``
            (``run_speech_recognition_ctc.py``) does; every other character then stays, punctuation included, and
            enters the vocabulary. None (default): every Unicode punctuation or symbol character (categories P*, S*)
            except the apostrophe becomes a **space** (``well-pleased`` -> ``well pleased``, ``«Ça va?»`` ->
            ``ça va``); digits stay.
        case: ``"lower"`` (the examples' convention; default for ``unicode``), ``"upper"`` (default and only value
            for ``librispeech``) or ``"keep"``. Scripts without case (Devanagari, Arabic, CJK) are unaffected.

    The ``unicode`` style, in order: NFC; curly apostrophes (``’ ‘ ʼ```) become ``'``; ``chars_to_ignore``, as
    above; ``|`` (the tokenizer's word delimiter) becomes a space; invisible format characters are dropped except
    the zero-width (non-)joiners, control characters become spaces; the case mapping, then NFC again (``İ``.lower()
    is ``i`` + a combining dot); tokens made only of apostrophes are dropped; whitespace of any kind collapses to
    single spaces. Letters and combining marks of every script are kept inside their words: ``naïve résumé`` ->
    ``naïve résumé``, ``Straße`` -> ``straße``, ``Привет, мир!`` -> ``привет мир``, ``नमस्ते दुनिया।`` ->
    ``नमस्ते दुनिया``. Every step is idempotent, so normalising twice changes nothing.
    """

    style: str = "unicode"
    chars_to_ignore: str | None = None
    case: str | None = None

    def __post_init__(self):
        if self.style not in STYLES:
            raise ValueError(f"text normalisation style must be one of {STYLES}, got {self.style!r}")
        if isinstance(self.chars_to_ignore, (list, tuple)):  # the examples pass a list of characters
            object.__setattr__(self, "chars_to_ignore", "".join(self.chars_to_ignore))
        if self.case is None:
            object.__setattr__(self, "case", "upper" if self.style == "librispeech" else "lower")
        if self.case not in CASES:
            raise ValueError(f"text normalisation case must be one of {CASES}, got {self.case!r}")
        if self.style == "librispeech" and (self.chars_to_ignore is not None or self.case != "upper"):
            raise ValueError("the librispeech style is fixed (upper-case A-Z and apostrophes): it takes neither "
                             f"chars_to_ignore nor case={self.case!r}; use style='unicode' for those options")

    def __call__(self, text: str) -> str:
        if self.style == "librispeech":
            return normalize_transcript(text)
        text = unicodedata.normalize("NFC", text).translate(_APOSTROPHES)
        if self.chars_to_ignore is not None:
            text = text.translate({ord(c): None for c in self.chars_to_ignore})
        text = "".join(self._map_character(c) for c in text)
        if self.case == "lower":
            text = unicodedata.normalize("NFC", text.lower())
        elif self.case == "upper":
            text = unicodedata.normalize("NFC", text.upper())
        return " ".join(word for word in text.split() if word.strip("'"))

    def _map_character(self, c: str) -> str:
        if c == "'" or c.isalnum() or c.isspace():
            return c
        category = unicodedata.category(c)
        if c == "|" or category == "Cc":
            return " "
        if category == "Cf":
            return c if c in _KEPT_FORMAT else ""
        if self.chars_to_ignore is None and category[0] in "PS":
            return " "
        return c  # combining marks (M*), and punctuation the user did not list in chars_to_ignore

    def to_dict(self) -> dict:
        """JSON-able form, stored in the tokenizer's config (``tokenizer_config.json``, key ``text_normalization``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TextNormalizer:
        unknown = set(values) - {"style", "chars_to_ignore", "case"}
        if unknown:
            raise ValueError(f"text_normalization: unknown field(s) {sorted(unknown)}; expected style, "
                             "chars_to_ignore, case")
        return cls(**values)

    def describe(self) -> str:
        """One line for logs and model cards."""
        if self.style == "librispeech":
            return "librispeech (upper-case A-Z and apostrophes, accents stripped)"
        ignored = ("Unicode punctuation and symbols -> space" if self.chars_to_ignore is None
                   else f"chars_to_ignore {self.chars_to_ignore!r} deleted")
        return f"unicode (NFC, case {self.case}, {ignored})"


LIBRISPEECH = TextNormalizer("librispeech")
