"""Any language: transcript normalisation that keeps every script's letters (French, German, Russian, Hindi), through
vocabulary building, the processor (and the normalisation stored in it), tokenisation, greedy CTC decoding and
WER/CER. Oracles: hand-written expected strings, unicodedata's own categories and compositions, and error counts
derived by hand."""

import unicodedata

import pytest
import torch
from transformers import Wav2Vec2Processor

from hf_wav2vec2.data import LIBRISPEECH, TextNormalizer, normalize_transcript
from hf_wav2vec2.data.ctc import (
    CTCCollator,
    build_processor,
    build_vocabulary,
    processor_normalizer,
    set_processor_normalizer,
)
from hf_wav2vec2.decoding import greedy_decode
from hf_wav2vec2.evaluation import error_rates

# raw transcript -> what the default TextNormalizer() must give (written by hand)
SAMPLES = {
    "fr": ("« Ça va ? » — naïve résumé, l’été à Noël !", "ça va naïve résumé l'été à noël"),
    "de": ("Die Straße ist schön; Größe: 42.", "die straße ist schön größe 42"),
    "ru": ("Привет, мир! Ёлка — зелёная.", "привет мир ёлка зелёная"),
    "hi": ("नमस्ते दुनिया। क़िला बहुत सुंदर है!", "नमस्ते दुनिया क़िला बहुत सुंदर है"),
}


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_unicode_normalizer_keeps_every_letter_in_its_word(language):
    raw, expected = SAMPLES[language]
    normalize = TextNormalizer()
    assert normalize(raw) == unicodedata.normalize("NFC", expected)
    assert normalize(normalize(raw)) == normalize(raw)  # idempotent: loading, labels and scoring may each apply it
    # decomposed input (NFD, as some tools write it) gives the same text
    assert normalize(unicodedata.normalize("NFD", raw)) == normalize(raw)
    # oracle from unicodedata: every letter and combining mark of the input survives, in order, lower-cased
    def letters_and_marks(text):
        return [c for c in unicodedata.normalize("NFC", text.lower()) if unicodedata.category(c)[0] in "LM"]
    assert letters_and_marks(normalize(raw)) == letters_and_marks(raw)


def test_devanagari_marks_stay_inside_words():
    text = "किताब पढ़ो"  # vowel sign ि (U+093F), virama-free; ढ़ is ढ + nukta under NFC (a composition exclusion)
    out = TextNormalizer()(text)
    assert out.split() == ["किताब", unicodedata.normalize("NFC", "पढ़ो")]
    assert "\u093f" in out and "\u093c" in out  # the vowel sign and the nukta are kept, not split off as words
    assert all(unicodedata.category(c) != "Zs" or c == " " for c in out)


def test_librispeech_style_strips_accents_without_splitting_words():
    assert LIBRISPEECH("naïve résumé") == normalize_transcript("naïve résumé") == "NAIVE RESUME"  # was "NAI VE RE SUME"
    assert LIBRISPEECH("It's well-pleased, 42.") == "IT'S WELL PLEASED"
    assert LIBRISPEECH(SAMPLES["ru"][0]) == ""  # why it must not be used for other scripts
    assert TextNormalizer()("naïve résumé") == "naïve résumé"


def test_chars_to_ignore_and_case_follow_the_examples():
    # transformers' run_speech_recognition_ctc.py: re.sub(f"[{''.join(chars)}]", "", text).lower()
    chars = [",", "?", ".", "!", "-", ";", ":"]
    normalize = TextNormalizer(chars_to_ignore=chars)
    assert normalize("Peut-être, Ça va?") == "peutêtre ça va"
    assert normalize("«Oui»") == "«oui»"  # characters not listed stay (and enter the vocabulary)
    assert TextNormalizer(case="keep")("Ça Va") == "Ça Va"
    assert TextNormalizer(case="upper")("straße") == "STRASSE"
    assert TextNormalizer()("a|b") == "a b"  # the tokenizer's word delimiter never appears inside a transcript
    with pytest.raises(ValueError, match="librispeech style is fixed"):
        TextNormalizer("librispeech", case="lower")
    with pytest.raises(ValueError, match="style must be one of"):
        TextNormalizer("french")


@pytest.fixture(scope="module")
def multilingual():
    normalize = TextNormalizer()
    texts = [raw for raw, _ in SAMPLES.values()]
    return normalize, build_processor(build_vocabulary(texts, normalize), normalizer=normalize)


def test_vocabulary_is_every_character_of_the_normalised_data(multilingual):
    normalize, processor = multilingual
    vocab = processor.tokenizer.get_vocab()
    expected = sorted(set("".join(expected.replace(" ", "") for _, expected in SAMPLES.values())))
    assert list(vocab)[:3] == ["[PAD]", "[UNK]", "|"]
    assert list(vocab)[3:] == expected
    assert {"ç", "ß", "ё", "\u093f", "\u094d"} <= set(vocab)  # ç, ß, ё, Devanagari vowel sign i and virama


def test_processor_stores_and_reloads_the_normalisation(multilingual, tmp_path):
    normalize, processor = multilingual
    processor.save_pretrained(tmp_path)
    loaded = Wav2Vec2Processor.from_pretrained(tmp_path)
    assert processor_normalizer(loaded) == normalize
    assert '"text_normalization"' in (tmp_path / "tokenizer_config.json").read_text()
    chosen = TextNormalizer(chars_to_ignore="-", case="keep")
    set_processor_normalizer(loaded, chosen)
    loaded.save_pretrained(tmp_path / "again")
    assert processor_normalizer(Wav2Vec2Processor.from_pretrained(tmp_path / "again")) == chosen


def test_processor_without_stored_normalisation_is_guessed_from_its_vocabulary(caplog):
    english = build_processor(build_vocabulary(["IT'S A TEST"]))
    del english.tokenizer.init_kwargs["text_normalization"]
    assert processor_normalizer(english) == LIBRISPEECH
    french = build_processor(build_vocabulary(["ça va"], TextNormalizer()), normalizer=TextNormalizer())
    del french.tokenizer.init_kwargs["text_normalization"]
    assert processor_normalizer(french) == TextNormalizer(case="lower")
    assert "guessed from its vocabulary" in caplog.text


def ctc_frames(labels: list[int], blank: int = 0) -> torch.Tensor:
    """A CTC alignment of ``labels``: each label twice, a blank after each (so repeats stay separate)."""
    frames = []
    for label in labels:
        frames += [label, label, blank]
    return torch.tensor([frames])


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_labels_tokenise_and_greedy_decode_back_to_the_text(multilingual, language):
    normalize, processor = multilingual
    raw, expected = SAMPLES[language]
    collator = CTCCollator(processor, frames_of=lambda n: n)
    labels = collator.labels(raw)  # normalised with the processor's stored normaliser
    assert processor.tokenizer.unk_token_id not in labels
    assert processor.tokenizer.decode(labels, group_tokens=False) == expected
    assert greedy_decode(ctc_frames(labels), processor.tokenizer) == [expected]


def test_unknown_characters_map_to_unk(multilingual):
    _, processor = multilingual
    collator = CTCCollator(processor, frames_of=lambda n: n)
    labels = collator.labels("ça ω")
    assert labels[-1] == processor.tokenizer.unk_token_id and collator.report.unknown_characters["ω"] == 1


def test_error_rates_count_accents_and_vowel_signs():
    normalize = TextNormalizer()
    # French: one word of four differs by its accent (très / tres): WER 1/4; CER one substitution over the
    # 15 characters of "ça va très bien" (spaces included)
    fr = error_rates([normalize("Ça va très bien.")], [normalize("ça va tres bien")])
    assert fr == pytest.approx({"wer": 1 / 4, "cer": 1 / 15})
    # LibriSpeech normalisation would hide the error: both sides become "CA VA TRES BIEN"
    assert LIBRISPEECH("Ça va très bien.") == LIBRISPEECH("ça va tres bien") == "CA VA TRES BIEN"
    # Hindi: short vowel sign ि (U+093F) read as long ी (U+0940): one of two words, one code point substituted
    reference, hypothesis = "नमस्ते दुनिया", "नमस्ते दुनीया"
    hi = error_rates([normalize(reference)], [normalize(hypothesis)])
    assert hi == pytest.approx({"wer": 1 / 2, "cer": 1 / len(reference)})
    # Russian: case alone is no error once both sides are normalised
    assert error_rates([normalize("Привет, мир!")], [normalize("привет мир")]) == {"wer": 0.0, "cer": 0.0}
