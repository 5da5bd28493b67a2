"""Any Hub dataset, offline: local folders in the Common Voice shape (a ``sentence`` column, ``client_id``, 48 kHz
MP3 or OGG audio, one configuration per language) loaded through ``datasets.load_dataset`` and the data layer, the
examples' option names (and the earlier aliases) in the scripts, evaluate_ctc.py using the normalisation stored with
the model, train_ctc.py refusing options it would ignore, and a tiny French fine-tuning run that logs to TensorBoard.

Oracles: ``datasets`` itself (its own reading of each folder's configurations and columns), soundfile's headers,
and sample counts derived by hand (0.5 s at 48 kHz = 24000 samples -> 8000 at 16 kHz)."""

import csv
import io
import json
import os
import sys
import warnings

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_config
from transformers import HfArgumentParser

from hf_wav2vec2 import W2V2ForCTC, W2V2ForPreTraining
from hf_wav2vec2.data import AudioDataset, TextNormalizer, default_normalizer, load_speech_dataset
from hf_wav2vec2.data.ctc import build_processor, build_vocabulary, processor_normalizer

SENTENCES = {
    "fr": ["Ça va, merci !", "L’été est très chaud.", "Où est la gare ?"],
    "de": ["Die Straße ist schön.", "Grüß Gott!", "Größe zählt nicht."],
}
SECONDS, RATE = 0.5, 48_000


def tone(seed: int) -> np.ndarray:
    t = np.arange(int(SECONDS * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * (180 + 40 * seed) * t)).astype(np.float32)


def encoded(seed: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, tone(seed), RATE, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cv_parquet(tmp_path_factory):
    """The Hub layout of today's Common Voice copies: parquet files per configuration and split, declared in
    README.md's YAML, with an Audio column holding 48 kHz MP3 bytes."""
    root = tmp_path_factory.mktemp("cv_parquet")
    configs = []
    for language, sentences in SENTENCES.items():
        for split, rows in (("train", sentences[:2]), ("test", sentences[2:])):
            table = {
                "client_id": [f"{language}-speaker{i}" for i in range(len(rows))],
                "path": [f"common_voice_{language}_{split}_{i}.mp3" for i in range(len(rows))],
                "audio": [{"bytes": encoded(i, "MP3"), "path": f"common_voice_{language}_{split}_{i}.mp3"}
                          for i in range(len(rows))],
                "sentence": rows,
                "locale": [language] * len(rows),
            }
            features = datasets.Features({
                "client_id": datasets.Value("string"), "path": datasets.Value("string"),
                "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                "sentence": datasets.Value("string"), "locale": datasets.Value("string")})
            # cast, not encode: datasets 5 encodes into an Audio column only with torchcodec
            part = datasets.Dataset.from_dict(table, features=features).cast_column("audio", datasets.Audio())
            os.makedirs(root / language, exist_ok=True)
            part.to_parquet(str(root / language / f"{split}.parquet"))
        configs.append(f"- config_name: {language}\n  data_files:\n"
                       f"  - split: train\n    path: {language}/train.parquet\n"
                       f"  - split: test\n    path: {language}/test.parquet\n")
    (root / "README.md").write_text("---\nconfigs:\n" + "".join(configs) + "---\n# a tiny Common Voice\n")
    return str(root)


@pytest.fixture(scope="module")
def cv_audiofolder(tmp_path_factory):
    """An audiofolder: 48 kHz OGG files beside metadata.csv (file_name, client_id, sentence), one data_dir per
    configuration (README.md YAML), train/test sub-folders as splits."""
    root = tmp_path_factory.mktemp("cv_audiofolder")
    configs = []
    for language, sentences in SENTENCES.items():
        for split, rows in (("train", sentences[:2]), ("test", sentences[2:])):
            folder = root / language / split
            os.makedirs(folder)
            with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["file_name", "client_id", "sentence"])
                for i, sentence in enumerate(rows):
                    (folder / f"{i}.ogg").write_bytes(encoded(i, "OGG"))
                    writer.writerow([f"{i}.ogg", f"{language}-speaker{i}", sentence])
        configs.append(f"- config_name: {language}\n  data_dir: {language}\n")
    (root / "README.md").write_text("---\nconfigs:\n" + "".join(configs) + "---\n")
    return str(root)


# ------------------------------------------------------------------------------------------------ data layer
@pytest.mark.parametrize("layout", ["parquet", "audiofolder"])
@pytest.mark.parametrize("language", ["fr", "de"])
def test_common_voice_shape_loads_by_configuration(request, layout, language):
    folder = request.getfixturevalue(f"cv_{layout}")
    ds = load_speech_dataset(folder, hub_config=language, split="train+test")
    normalize = TextNormalizer()
    assert ds["text"] == [normalize(s) for s in SENTENCES[language]]  # accents kept: "l'été est très chaud"
    assert ds["speaker_id"] == [f"{language}-speaker{i}" for i in (0, 1, 0)]
    assert ds["duration"] == pytest.approx([SECONDS] * 3)  # soundfile's header: 24000 frames at 48 kHz
    assert ds["num_samples"] == [8000] * 3  # 24000 samples at 48 kHz -> 8000 at 16 kHz
    decoded = AudioDataset(ds)
    assert [len(decoded[i]["input_values"]) for i in range(3)] == [8000] * 3
    if layout == "parquet":  # datasets' own reading of the same configuration is the oracle for the text
        raw = datasets.load_dataset(folder, language, split="train+test")
        assert ds["text"] == [normalize(s) for s in raw["sentence"]]
        assert ds[0]["audio"]["bytes"] == encoded(0, "MP3")  # the MP3 bytes themselves, not decoded
    assert default_normalizer(folder) == TextNormalizer()


def test_options_of_a_datasets_source(cv_parquet, tmp_path):
    assert len(load_speech_dataset(cv_parquet, hub_config="fr", split="train", max_samples=1)) == 1
    with pytest.raises(ValueError, match="text column 'transcript' not found"):
        load_speech_dataset(cv_parquet, hub_config="fr", split="train", text_column="transcript")
    with pytest.raises(ValueError, match="audio column 'speech' not found"):
        load_speech_dataset(cv_parquet, hub_config="fr", split="train", audio_column="speech")
    # a save_to_disk folder (no configurations; its splits by name)
    splits = datasets.DatasetDict({"train": datasets.load_dataset(cv_parquet, "de", split="train")})
    splits.save_to_disk(str(tmp_path / "saved"))
    ds = load_speech_dataset(str(tmp_path / "saved"), split="train")
    assert ds["text"] == [TextNormalizer()(s) for s in SENTENCES["de"][:2]]
    with pytest.raises(ValueError, match="pass a split, one of \\['train'\\]"):
        load_speech_dataset(str(tmp_path / "saved"), split="validation")


# ---------------------------------------------------------------------------------------------------- scripts
def test_scripts_take_the_examples_names_and_the_earlier_aliases():
    from hf_wav2vec2.cli import evaluate_ctc, train_ctc, train_pretrain
    from hf_wav2vec2.cli.common import warn_renamed_options

    parser = HfArgumentParser(train_ctc.Arguments)
    new = parser.parse_args_into_dataclasses(args=[
        "--model_name_or_path", "m", "--dataset_name", "cv", "--dataset_config_name", "fr",
        "--train_split_name", "train", "--eval_split_name", "test", "--test_split_name", "validation",
        "--text_column_name", "sentence", "--audio_column_name", "speech", "--max_train_samples", "5",
        "--max_eval_samples", "2", "--chars_to_ignore", ",", "?", "--text_case", "keep"])[0]
    old = parser.parse_args_into_dataclasses(args=[
        "--model_name_or_path", "m", "--dataset", "cv", "--hub_config", "fr", "--split", "train",
        "--eval_split", "test", "--test_split", "validation", "--text_column_name", "sentence",
        "--audio_column_name", "speech", "--max_train_samples", "5", "--max_eval_samples", "2",
        "--chars_to_ignore", ",", "?", "--text_case", "keep"])[0]
    assert new == old and new.dataset_name == ["cv"] and new.eval_split_name == "test"
    # the old names warn, naming the new ones; the new names do not
    with pytest.warns(FutureWarning) as caught:
        warn_renamed_options(["--dataset", "cv", "--split=train", "--eval_split", "test"], train_ctc.Arguments)
    assert sorted(str(w.message).split(";")[0] for w in caught) == [
        "--dataset is now --dataset_name", "--eval_split is now --eval_split_name", "--split is now --train_split_name"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_renamed_options(["--dataset_name", "cv", "--train_split_name", "train"], train_ctc.Arguments)
    assert new.chars_to_ignore == [",", "?"]
    assert train_ctc.training_normalizer(new, ["cv"]) == TextNormalizer(chars_to_ignore=",?", case="keep")
    evaluate = HfArgumentParser(evaluate_ctc.Arguments)
    assert evaluate.parse_args_into_dataclasses(args=[
        "--model", "m", "--dataset_name", "cv", "--dataset_config_name", "fr", "--eval_split_name", "test",
        "--max_eval_samples", "3"])[0] == evaluate.parse_args_into_dataclasses(args=[
            "--model", "m", "--dataset", "cv", "--hub_config", "fr", "--split", "test", "--max_utterances", "3"])[0]
    pretrain = HfArgumentParser(train_pretrain.Arguments)
    assert pretrain.parse_args_into_dataclasses(args=[
        "--dataset_name", "cv", "--output_dir", "o", "--dataset_config_name", "fr", "--train_split_name", "train",
        "--eval_split_name", "test"])[0] == pretrain.parse_args_into_dataclasses(args=[
            "--dataset", "cv", "--output_dir", "o", "--hub_config", "fr", "--split", "train", "--dev_split", "test"])[0]


@pytest.mark.parametrize("option, message", [
    (["--per_device_train_batch_size", "4"], "use --max_tokens"),
    (["--group_by_length"], "by total audio"),
    (["--lr_scheduler_type", "cosine"], "tri-stage"),
    (["--warmup_steps", "100"], "tri-stage"),
    (["--warmup_ratio", "0.1"], "tri-stage"),  # gone from transformers 5's TrainingArguments: still explained
    (["--num_train_epochs", "2", "--max_steps", "10"], "not both"),
    (["--load_best_model_at_end", "true"], "need(s) a dev split"),
    (["--eval_strategy", "steps"], "need(s) a dev split"),
])
def test_train_ctc_refuses_options_it_would_ignore(option, message):
    from hf_wav2vec2.cli.train_ctc import check_options

    with pytest.raises(SystemExit, match=message.replace("(", "\\(").replace(")", "\\)")):
        check_options(["--model_name_or_path", "m", "--dataset_name", "d", "--output_dir", "o", *option])


def test_train_ctc_without_dev_split_needs_no_eval_options():
    from hf_wav2vec2.cli.train_ctc import Arguments, CTCTrainingArguments, check_options

    argv = ["--model_name_or_path", "m", "--dataset_name", "d", "--output_dir", "o", "--eval_steps", "0.1"]
    with pytest.raises(SystemExit, match="--eval_steps need"):
        check_options(argv)
    parser = HfArgumentParser((Arguments, CTCTrainingArguments))
    parser.set_defaults(**check_options(argv[:-2]))
    _, training_args = parser.parse_args_into_dataclasses(args=argv[:-2])  # the defaults do not fail
    assert training_args.eval_strategy == "no" and not training_args.load_best_model_at_end
    assert training_args.report_to == ["tensorboard"]


@pytest.mark.parametrize("given, expected", [(["--eval_steps", "50"], (50, 50)), (["--save_steps", "20"], (20, 20)),
                                             (["--eval_steps", "50", "--save_steps", "100"], (50, 100))])
def test_train_ctc_one_interval_given_sets_the_other(given, expected):
    """The transformers examples' habit, ``--eval_steps 50`` alone: the save interval follows it (the default 0.1 is a
    fraction, which transformers refuses beside a count when the best checkpoint is loaded at the end)."""
    from hf_wav2vec2.cli.train_ctc import Arguments, CTCTrainingArguments, check_options

    argv = ["--model_name_or_path", "m", "--dataset_name", "d", "--eval_split_name", "dev", "--output_dir", "o",
            "--use_cpu", "true", *given]
    parser = HfArgumentParser((Arguments, CTCTrainingArguments))
    parser.set_defaults(**check_options(argv))
    _, training_args = parser.parse_args_into_dataclasses(args=argv)  # transformers' own checks pass
    assert (training_args.eval_steps, training_args.save_steps) == expected and training_args.load_best_model_at_end


def test_train_ctc_bf16_without_a_gpu_runs_on_the_cpu(monkeypatch):
    from hf_wav2vec2.cli.train_ctc import Arguments, CTCTrainingArguments, check_options

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["--model_name_or_path", "m", "--dataset_name", "d", "--eval_split_name", "dev", "--output_dir", "o",
            "--bf16", "true"]
    parser = HfArgumentParser((Arguments, CTCTrainingArguments))
    with pytest.raises(ValueError, match="use_cpu"):  # transformers' own check, without the default
        parser.parse_args_into_dataclasses(args=argv)
    parser.set_defaults(**check_options(argv))
    _, training_args = parser.parse_args_into_dataclasses(args=argv)
    assert training_args.bf16 and training_args.use_cpu and training_args.device.type == "cpu"
    assert "use_cpu" not in check_options(argv[:-2])  # fp32 leaves the device to transformers


@pytest.fixture(scope="module")
def french_model(tmp_path_factory):
    """A tiny CTC model with a French processor (chars_to_ignore as the examples, case kept), saved."""
    folder = tmp_path_factory.mktemp("french_model")
    normalizer = TextNormalizer(chars_to_ignore=",!?.", case="keep")
    processor = build_processor(build_vocabulary(SENTENCES["fr"], normalizer), normalizer=normalizer)
    W2V2ForCTC(tiny_config(vocab_size=len(processor.tokenizer), pad_token_id=0)).save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder), normalizer


def test_evaluate_ctc_scores_with_the_models_normalisation(french_model, cv_parquet, tmp_path):
    from hf_wav2vec2.cli.evaluate_ctc import run

    folder, normalizer = french_model
    predictions = tmp_path / "predictions.jsonl"
    result = run(["--model", folder, "--dataset_name", cv_parquet, "--dataset_config_name", "fr",
                  "--eval_split_name", "train+test", "--text_column_name", "sentence", "--device", "cpu",
                  "--predictions", str(predictions), "--progress", "false"])
    assert result["text_normalization"] == normalizer.to_dict() and result["num_utterances"] == 3
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()]
    # case kept, "," "!" "." deleted, the curly apostrophe made straight: not the lower-case default, not LibriSpeech
    assert sorted(row["reference"] for row in rows) == sorted(["Ça va merci", "L'été est très chaud", "Où est la gare"])
    assert 0 <= result["greedy"]["cer"]


def test_train_ctc_french_epochs_end_to_end_with_tensorboard(cv_audiofolder, tmp_path, monkeypatch):
    from hf_wav2vec2.cli import train_ctc

    start, out = tmp_path / "pretrained", tmp_path / "out"
    W2V2ForPreTraining(tiny_config()).save_pretrained(start)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sys, "argv", [
        "train_ctc.py", "--model_name_or_path", str(start), "--dataset_name", cv_audiofolder,
        "--dataset_config_name", "fr", "--train_split_name", "train", "--eval_split_name", "test",
        "--output_dir", str(out), "--num_train_epochs", "2", "--freeze_finetune_updates", "1", "--max_tokens", "8000",
        "--learning_rate", "1e-3", "--disable_tqdm", "true", "--huge_pages", "false", "--save_strategy", "no",
        "--eval_strategy", "no", "--load_best_model_at_end", "false", "--language", "fr"])
    train_ctc.main()
    from huggingface_hub import ModelCard

    assert ModelCard.load(out / "README.md").data.language in ("fr", ["fr"])  # --language reaches the card
    config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["text_normalization"] == TextNormalizer().to_dict()  # auto: not a LibriSpeech source
    vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    assert {"ç", "é", "è", "'"} <= set(vocab) and "C" not in vocab  # accents kept, lower case
    from transformers import Wav2Vec2Processor

    assert processor_normalizer(Wav2Vec2Processor.from_pretrained(out)) == TextNormalizer()
    events = [name for _, _, names in os.walk(out / "runs") for name in names if name.startswith("events.out")]
    assert events, "no TensorBoard event file under output_dir/runs"
    results = json.loads((out / "eval_results.json").read_text())
    assert "eval_wer" in results["results"]["test"]
    # --num_train_epochs honoured: 2 epochs of 2 batches (two 8000-sample utterances, --max_tokens 8000)
    assert results["log_history"][-1]["step"] == 4
