"""Transcript normalisation, LibriSpeech style: upper-case letters, apostrophes and single spaces."""

import re
import unicodedata

# Curly quotes and the modifier letter apostrophe stand for the same apostrophe in a transcript.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_NOT_ALLOWED = re.compile(r"[^A-Z' ]+")


def normalize_transcript(text: str) -> str:
    """Normalise a transcript the way LibriSpeech's are written.

    Accents are stripped (``café`` -> ``CAFE``), everything is upper-cased, every character other than A-Z and the
    apostrophe becomes a space (``well-pleased`` -> ``WELL PLEASED``; digits and punctuation disappear), tokens made
    only of apostrophes are dropped and whitespace is collapsed to single spaces. Apostrophes at a word's edge are
    kept (``'TWAS``, ``BROTHERS'``), as in LibriSpeech, so an already normalised LibriSpeech line is unchanged.

    Example: ``normalize_transcript("And God said, Let there be light.")`` -> ``"AND GOD SAID LET THERE BE LIGHT"``.
    """
    # NFKD splits "é" into "e" + a combining accent, which the filter below then removes.
    text = unicodedata.normalize("NFKD", text).translate(_APOSTROPHES).upper()
    words = _NOT_ALLOWED.sub(" ", text).split()
    return " ".join(word for word in words if word.strip("'"))
