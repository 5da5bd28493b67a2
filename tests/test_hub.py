"""Hub folders: complete on their own (code + auto_map + processor + card), loadable with trust_remote_code in a
Python where hf_wav2vec2 cannot be imported, and pushed through huggingface_hub."""

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_config
from huggingface_hub import HfApi, ModelCard, RepoUrl, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results
from huggingface_hub.utils import filter_repo_objects
from transformers import (
    TrainingArguments,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Processor,
    pipeline,
)
from transformers.dynamic_module_utils import get_relative_import_files

import hf_wav2vec2
from hf_wav2vec2 import W2V2ForCTC, W2V2ForPreTraining
from hf_wav2vec2.cli.card_info import card_language, finetuned_model_card_info
from hf_wav2vec2.cli.cards import (
    ASRResult,
    ModelCardInfo,
    build_model_card,
    copy_model_card,
)
from hf_wav2vec2.data.ctc import CTCCollator, build_processor, build_vocabulary
from hf_wav2vec2.hub import check_code_imports, check_hub_folder, push_hub_folder, save_hub_folder
from hf_wav2vec2.training.finetune import CTCTrainer

REPO = Path(hf_wav2vec2.__file__).resolve().parents[1]
CODE_FILES = {"modeling.py", "configuration.py", "feature_encoder.py", "frames.py", "loading.py", "kernels_conv.py",
              "kernels_norm.py", "kernels_fft.py", "kernels_recompute.py", "kernels_dropout.py", "kernels_attention.py",
              "outputs.py", "masking.py", "transformer.py",
              "quantizer.py", "losses.py"}
CARD = {
    "model_name": "w2v2-tiny-test",
    "language": "en",
    "repo_id": "someone/w2v2-tiny-test",
    "datasets": ["openslr/librispeech_asr"],
    "results": [
        {"dataset_type": "openslr/librispeech_asr", "dataset_name": "LibriSpeech test-clean", "split": "test",
         "dataset_config": "clean", "wer": 0.0512, "cer": 0.0156},
        {"dataset_type": "openslr/librispeech_asr", "dataset_name": "LibriSpeech test-clean", "split": "test",
         "dataset_config": "clean", "wer": 0.0345, "cer": 0.0121, "decoding": "4-gram LM, beam 500"},
    ],
    "pretraining": {"data": "LibriSpeech 960 h", "updates": 400_000, "peak learning rate": 5e-4},
    "finetuning": {"data": "Libri-light 10 h", "updates": 20_000, "freeze_finetune_updates": 10_000},
}


def make_processor(folder: Path) -> Wav2Vec2Processor:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"[PAD]": 0, "[UNK]": 1, "|": 2, "'": 3, **{c: 4 + i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ")}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="[UNK]", pad_token="[PAD]",
                                     word_delimiter_token="|", bos_token=None, eos_token=None)
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                         return_attention_mask=True)
    return Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hub")
    processor = make_processor(root / "vocab")
    model = W2V2ForCTC(tiny_config(vocab_size=len(processor.tokenizer))).eval()
    folder = save_hub_folder(model, processor, root / "w2v2-tiny-test",
                             card=build_model_card(ModelCardInfo.from_dict(CARD), model))
    return model, processor, folder


def test_folder_is_complete(hub_folder):
    model, _, folder = hub_folder
    assert check_hub_folder(folder) == []
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "vocab.json", "tokenizer_config.json", "README.md"} <= names
    assert CODE_FILES <= names
    check_code_imports([folder / name for name in CODE_FILES])  # stdlib, torch, transformers, huggingface_hub
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "w2v2"
    assert config["auto_map"] == {"AutoConfig": "configuration.W2V2Config", "AutoModel": "modeling.W2V2Model",
                                  "AutoModelForCTC": "modeling.W2V2ForCTC"}
    # the in-package classes load the folder too (no remote code needed where hf_wav2vec2 is imported)
    reloaded = W2V2ForCTC.from_pretrained(folder).eval()
    x = torch.randn(1, 4000)
    torch.testing.assert_close(reloaded(x).logits, model(x).logits)


def test_pretraining_folder_maps_its_own_head(tmp_path):
    model = W2V2ForPreTraining(tiny_config(vocab_size=None))
    folder = save_hub_folder(model, None, tmp_path / "pre")
    assert json.loads((folder / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration.W2V2Config", "AutoModel": "modeling.W2V2Model",
        "AutoModelForPreTraining": "modeling.W2V2ForPreTraining"}


def test_model_card_metadata_and_sections(hub_folder, tmp_path):
    _, _, folder = hub_folder
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert data.language == "en" and data.license == "apache-2.0"
    assert data.tags == ["automatic-speech-recognition", "wav2vec2", "hf_wav2vec2"]
    assert data.datasets == ["openslr/librispeech_asr"] and data.metrics == ["wer", "cer"]
    assert data.pipeline_tag == "automatic-speech-recognition"
    results = {(r.metric_type, r.metric_name): r for r in data.eval_results}
    assert len(results) == 4
    greedy_wer = results[("wer", "test WER (greedy)")]
    assert greedy_wer.task_type == "automatic-speech-recognition"
    assert (greedy_wer.dataset_name, greedy_wer.dataset_type, greedy_wer.dataset_split) == (
        "LibriSpeech test-clean", "openslr/librispeech_asr", "test")
    assert greedy_wer.metric_value == 5.12  # percent
    assert results[("cer", "test CER (4-gram LM, beam 500)")].metric_value == 1.21
    text = card.text
    for needle in ("| updates | 400000 |", "| freeze_finetune_updates | 10000 |", 'trust_remote_code=True',
                   'pipeline("automatic-speech-recognition", model="someone/w2v2-tiny-test"',
                   "soxr.resample", "| LibriSpeech test-clean | test | greedy | 5.12 | 1.56 |", "baevski2020wav2vec",
                   "from hf_wav2vec2.pipeline import\nasr_pipeline"):
        assert needle in text, needle
    info = ModelCardInfo.from_dict(CARD)
    assert isinstance(info.results[1], ASRResult) and info.results[1].decoding == "4-gram LM, beam 500"
    copied = copy_model_card(folder, "w2v2-tiny-test", tmp_path / "model_cards")
    assert copied == tmp_path / "model_cards" / "w2v2-tiny-test.md"
    assert copied.read_text() == (folder / "README.md").read_text()


def test_card_of_a_train_ctc_run_on_local_data(tmp_path):
    """A local synthetic corpus: described in the text, never a Hub id in the metadata."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "corpus.json").write_text("{}")  # what hf_wav2vec2.corpus writes beside its LibriSpeech layout
    pretrained = tmp_path / "pretrain"
    pretrained.mkdir()
    (pretrained / "train_history.json").write_text(json.dumps({
        "history": [{}, {}, {}], "seen_audio_h": 1.5, "last_validation": {"val_contrastive_loss": 2.5,
                                                                         "val_accuracy": 0.25}}))
    args = SimpleNamespace(dataset_name=[str(corpus)], dataset_config_name=None, train_split_name="train-clean",
                           eval_dataset_name=None, eval_split_name="dev-clean", test_split_name="test-clean",
                           model_name_or_path=str(pretrained))
    training_args = SimpleNamespace(output_dir=str(tmp_path / "ctc-tiny"), hub_model_id=None, adam_beta2=0.98,
                                    adam_epsilon=1e-8)
    results = {"dev-clean": {"eval_wer": 0.25, "eval_cer": 0.1}, "test-clean": {"test_wer": 0.3, "test_cer": 0.125}}
    info = finetuned_model_card_info(args, training_args, "tiny", {"learning_rate": 1e-3}, 0.75, results)
    name = "hf_wav2vec2 synthetic corpus (eSpeak NG)"  # never "LibriSpeech" for its layout alone
    assert [(r.dataset_type, r.dataset_name, r.split, r.wer, r.cer) for r in info.results] == [
        (None, f"{name} dev-clean", "dev-clean", 0.25, 0.1), (None, f"{name} test-clean", "test-clean", 0.3, 0.125)]
    assert info.finetuning["training data"] == f"{name} train-clean" and info.finetuning["learning_rate"] == 1e-3
    assert info.pretraining["updates"] == 3 and info.pretraining["hours of audio seen"] == "1.50"
    assert info.pretraining["final validation contrastive loss"] == 2.5
    assert (info.model_name, info.repo_id, info.base_model, info.language) == ("ctc-tiny", "ctc-tiny", None, "en")
    assert info.datasets == [] and info.training_log == []
    card = build_model_card(info)
    assert card.data.datasets is None and card.data.eval_results is None  # no model-index without Hub data
    assert "model-index" not in card.content.split("---")[1]
    for needle in (f"training (0.75 h of labelled audio): {name}", "local folder `corpus`", "dev: ", "test: ",
                   f"| {name} dev-clean | dev-clean | greedy | 25.00 | 10.00 |",
                   "not in the `model-index` metadata", "synthetic speech (eSpeak NG voices)"):
        assert needle in card.text, needle
    assert str(tmp_path) not in card.content  # no absolute path of this machine in a card


def test_card_of_a_train_ctc_run_on_hub_data(tmp_path):
    """Hub data: ids in `datasets:`, id + config + split per model-index result, the per-evaluation
    table from the Trainer's log_history (evaluations after training excluded), hyper-parameters."""
    args = SimpleNamespace(dataset_name=["openslr/librispeech_asr"], dataset_config_name="clean",
                           train_split_name="train.100", eval_dataset_name=None, eval_split_name="validation",
                           test_split_name="test", model_name_or_path="facebook/wav2vec2-base")
    training_args = SimpleNamespace(output_dir=str(tmp_path / "w2v2-base-100h"), hub_model_id="me/w2v2-base-100h",
                                    adam_beta2=0.98, adam_epsilon=1e-8, world_size=2, gradient_accumulation_steps=4,
                                    bf16=True, seed=3)
    log_history = [{"loss": 900.0, "step": 10}, {"loss": 500.0, "step": 20},
                   {"eval_loss": 400.0, "eval_wer": 0.9, "eval_cer": 0.5, "epoch": 0.5, "step": 20},
                   {"loss": 100.0, "step": 30}, {"loss": 50.0, "step": 40},
                   {"eval_loss": 60.0, "eval_wer": 0.2, "eval_cer": 0.05, "epoch": 1.0, "step": 40},
                   {"train_runtime": 12.0, "train_loss": 300.0, "step": 40},
                   {"eval_loss": 60.0, "eval_wer": 0.2, "eval_cer": 0.05, "epoch": 1.0, "step": 40}]
    results = {"validation": {"eval_wer": 0.2, "eval_cer": 0.05}, "test": {"test_wer": 0.21, "test_cer": 0.06}}
    info = finetuned_model_card_info(args, training_args, "100h", {"learning_rate": 3e-5}, 100.6, results,
                                     log_history=log_history)
    assert info.datasets == ["openslr/librispeech_asr"] and info.language == "en"
    assert info.base_model == "facebook/wav2vec2-base" and info.repo_id == "me/w2v2-base-100h"
    assert [(row["step"], row["training loss"], row["dev WER %"]) for row in info.training_log] == [
        (20, 500.0, 90.0), (40, 50.0, 20.0)]
    assert info.finetuning["processes x gradient accumulation"] == "2 x 4"
    assert info.finetuning["mixed precision"] == "bf16" and info.finetuning["seed"] == 3
    card = build_model_card(info)
    path = tmp_path / "README.md"
    card.save(path)
    # huggingface_hub's own parsers, offline: the front matter, then the model-index back into EvalResults
    metadata = metadata_load(path)
    assert metadata["datasets"] == ["openslr/librispeech_asr"] and metadata["base_model"] == "facebook/wav2vec2-base"
    name, results_back = model_index_to_eval_results(metadata["model-index"])
    assert name == "w2v2-base-100h"
    got = {(r.dataset_type, r.dataset_config, r.dataset_split, r.metric_type, r.metric_value) for r in results_back}
    assert got == {("openslr/librispeech_asr", "clean", "validation", "wer", 20.0),
                   ("openslr/librispeech_asr", "clean", "validation", "cer", 5.0),
                   ("openslr/librispeech_asr", "clean", "test", "wer", 21.0),
                   ("openslr/librispeech_asr", "clean", "test", "cer", 6.0)}
    assert ModelCard.load(path).data.eval_results == card.data.eval_results
    text = card.text
    for needle in ("| step | epoch | training loss | dev loss | dev WER % | dev CER % |",
                   "| 20 | 0.5 | 500 | 400 | 90 | 50 |", "| 40 | 1 | 50 | 60 | 20 | 5 |",
                   "Hub dataset [`openslr/librispeech_asr`]", "config `clean`, split `train.100`", "## Intended use",
                   "## Limitations", "## Framework versions"):
        assert needle in text, needle
    assert text.count("| 40 | 1 |") == 1  # the final evaluation after training is a result, not a log row


def test_card_framework_versions_limitations_and_dataset_ids():
    """Versions are the running ones (oracle: the modules' own __version__); the group-norm caveat appears for
    group-norm models only; a local path is refused as a Hub dataset id."""
    import accelerate
    import datasets
    import transformers

    info = ModelCardInfo.from_dict(CARD)
    assert info.framework_versions == {"torch": torch.__version__, "transformers": transformers.__version__,
                                       "datasets": datasets.__version__, "accelerate": accelerate.__version__,
                                       "hf_wav2vec2": hf_wav2vec2.__version__}
    group = build_model_card(info, W2V2ForCTC(tiny_config(vocab_size=30))).text
    layer = build_model_card(info, W2V2ForCTC(tiny_config("layer_preln", vocab_size=30))).text
    assert f"- transformers {transformers.__version__}" in group
    caveat = "on padded batches the outputs differ from stock transformers"
    assert caveat in group and caveat not in layer
    assert "Not tested on other languages" in group and "Language: en." in group
    with pytest.raises(ValueError, match="Hub dataset ids"):
        ModelCardInfo(model_name="x", datasets=["/data/LibriSpeech"])
    # language: the option when given, English for LibriSpeech, else unknown (left out of the metadata)
    assert card_language(SimpleNamespace(language="fr"), ["openslr/librispeech_asr"]) == "fr"
    assert card_language(SimpleNamespace(), ["openslr/librispeech_asr"]) == "en"
    assert card_language(SimpleNamespace(), ["someone/swahili_speech"]) is None
    assert build_model_card(ModelCardInfo(model_name="x")).data.language is None
    with pytest.raises(ValueError, match="task"):
        ModelCardInfo(model_name="x", task="asr")


def test_mismatched_processor_and_bad_code_are_refused(hub_folder, tmp_path):
    model, processor, _ = hub_folder
    small = W2V2ForCTC(tiny_config(vocab_size=10))
    with pytest.raises(ValueError, match="tokens but the model only 10 logits"):
        save_hub_folder(small, processor, tmp_path / "bad")
    other_blank = W2V2ForCTC(tiny_config(vocab_size=len(processor.tokenizer), pad_token_id=3))
    with pytest.raises(ValueError, match="CTC blank"):
        save_hub_folder(other_blank, processor, tmp_path / "bad")
    code = tmp_path / "uses_numpy.py"
    code.write_text("import numpy\nimport torch\n")
    with pytest.raises(ValueError, match="numpy"):
        check_code_imports([code])


def test_push_uploads_the_folder_through_huggingface_hub(hub_folder, monkeypatch, tmp_path):
    _, _, folder = hub_folder
    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw)) or "commit")
    assert push_hub_folder(folder, "someone/w2v2-tiny-test", private=True) == "commit"
    (create, repo_id, create_kw), (upload, upload_kw) = calls
    assert (create, repo_id, create_kw["private"], create_kw["exist_ok"]) == ("create", "someone/w2v2-tiny-test",
                                                                             True, True)
    assert upload == "upload" and upload_kw["repo_id"] == "someone/w2v2-tiny-test"
    assert upload_kw["folder_path"] == os.fspath(folder) and upload_kw["repo_type"] == "model"
    # an incomplete folder never reaches the Hub
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "w2v2", "vocab_size": 30}))
    calls.clear()
    with pytest.raises(ValueError, match="not ready to push.*safetensors.*auto_map lacks AutoConfig"):
        push_hub_folder(tmp_path, "someone/x")
    assert calls == []


REMOTE_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.modules["hf_wav2vec2"] = None  # an editable install would otherwise still be importable
    try:
        import hf_wav2vec2  # noqa: F401
        raise SystemExit("hf_wav2vec2 is importable")
    except ImportError:
        pass
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCTC, AutoProcessor, pipeline

    folder, out = sys.argv[1], sys.argv[2]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForCTC.from_pretrained(folder, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    audio = torch.from_numpy(np.load(out + "/audio.npy"))
    with torch.no_grad():
        logits = model(audio).logits
        hidden = base(audio).last_hidden_state
    asr = pipeline("automatic-speech-recognition", model=folder, trust_remote_code=True)
    torch.save({"logits": logits, "hidden": hidden}, out + "/remote.pt")
    repo_modules = sorted(name for name, module in sys.modules.items()
                          if getattr(module, "__file__", None) and module.__file__.startswith(sys.argv[3]))
    json.dump({"config": type(config).__name__, "model": type(model).__name__, "module": type(model).__module__,
               "base": type(base).__name__, "processor": type(processor).__name__,
               "text": asr(audio[0].numpy())["text"], "repo_modules": repo_modules}, open(out + "/remote.json", "w"))
""")


def test_trust_remote_code_without_the_package(hub_folder, tmp_path):
    """A fresh, isolated Python that cannot import hf_wav2vec2 loads the folder from its own code: same logits."""
    model, _, folder = hub_folder
    audio = np.random.default_rng(0).standard_normal((1, 8000)).astype(np.float32)
    np.save(tmp_path / "audio.npy", audio)
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), HF_MODULES_CACHE=str(tmp_path / "modules"))
    # -I: no PYTHONPATH, no user site, the script's folder (not the repo) on sys.path; cwd outside the repo too
    run = subprocess.run([sys.executable, "-I", str(tmp_path / "remote.py"), str(folder), str(tmp_path), str(REPO)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    remote = json.loads((tmp_path / "remote.json").read_text())
    assert remote["repo_modules"] == []  # nothing was imported from the repository
    assert remote["module"].startswith("transformers_modules.")  # the class came from the folder's code
    assert (remote["config"], remote["model"], remote["base"], remote["processor"]) == (
        "W2V2Config", "W2V2ForCTC", "W2V2Model", "Wav2Vec2Processor")
    tensors = torch.load(tmp_path / "remote.pt")
    with torch.no_grad():
        logits = model(torch.from_numpy(audio)).logits
        hidden = model.wav2vec2(torch.from_numpy(audio)).last_hidden_state
    torch.testing.assert_close(tensors["logits"], logits)
    torch.testing.assert_close(tensors["hidden"], hidden)
    # the pipeline over the folder gives the same transcript with the package's classes
    assert remote["text"] == pipeline("automatic-speech-recognition", model=str(folder))(audio[0])["text"]


# ------------------------------------------------------------------------------------- pushes, mocked offline
def _snapshot(folder) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), folder) for d, _, names in os.walk(folder) for f in names}


@pytest.fixture
def recorded_uploads(monkeypatch):
    """HfApi.create_repo / upload_folder replaced: each upload records its arguments and the folder's files and
    config.json at that moment, and returns a finished Future (what run_as_future=True callers wait on)."""
    uploads = []

    def create_repo(self, repo_id, **kwargs):
        uploads.append({"create": repo_id, **kwargs})
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, folder_path, **kwargs):
        config = Path(folder_path) / "config.json"
        uploads.append({"folder_path": folder_path, **kwargs, "files": _snapshot(folder_path),
                        "config": json.loads(config.read_text()) if config.is_file() else None})
        done = Future()
        done.set_result("commit")
        return done if kwargs.get("run_as_future") else "commit"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return uploads


@pytest.mark.parametrize("hub_strategy", ["every_save", "checkpoint"])
def test_trainer_pushes_during_training_carry_the_code_auto_map_names(tmp_path, recorded_uploads, hub_strategy):
    """Every folder the Trainer uploads while training (output_dir at each save; last-checkpoint too) holds the code
    files its config.json's auto_map names and their relative imports (transformers' own resolver)."""
    processor = build_processor(build_vocabulary(["and god said", "let there be light"]))
    model = W2V2ForCTC(tiny_config(vocab_size=len(processor.tokenizer), pad_token_id=0, ctc_loss_reduction="sum"))
    rng = np.random.default_rng(0)
    data = [{"input_values": rng.standard_normal(8000).astype(np.float32), "text": "and god said"} for _ in range(4)]
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2,
                             save_strategy="steps", save_steps=1, push_to_hub=True, hub_model_id="me/w2v2-ctc",
                             hub_strategy=hub_strategy, report_to=[], remove_unused_columns=False, disable_tqdm=True)
    CTCTrainer(model=model, args=args, train_dataset=data, processing_class=processor,
               data_collator=CTCCollator(processor, model.num_frames)).train()
    uploads = [u for u in recorded_uploads if "folder_path" in u]
    roots = [u for u in uploads if u.get("path_in_repo") is None]
    assert len(roots) == 2 and len(uploads) == (4 if hub_strategy == "checkpoint" else 2)  # one push per save
    for upload in uploads:
        pushed = {f for f in upload["files"] if not f.startswith("checkpoint-")}  # the Trainer ignores those
        auto_map = upload["config"]["auto_map"]
        assert {"AutoConfig", "AutoModelForCTC"} <= set(auto_map)
        for ref in auto_map.values():
            code = Path(upload["folder_path"]) / f"{ref.split('.')[0]}.py"
            assert code.name in pushed, (upload.get("path_in_repo"), code.name)
            for needed in get_relative_import_files(str(code)):
                assert Path(needed).name in pushed, (code.name, needed)


def _write_librispeech_split(root: Path, split: str, count: int, seconds: float = 1.0):
    """A few noise utterances in the OpenSLR layout (<split>/<speaker>/<chapter>/*.flac + *.trans.txt)."""
    chapter = root / split / "1" / "2"
    chapter.mkdir(parents=True)
    rng = np.random.default_rng(len(split))
    lines = []
    for i in range(count):
        sf.write(chapter / f"1-2-{i:04d}.flac", 0.1 * rng.standard_normal(int(16000 * seconds)), 16000)
        lines.append(f"1-2-{i:04d} AND GOD SAID")
    (chapter / "1-2.trans.txt").write_text("\n".join(lines) + "\n")


def test_pretraining_run_writes_its_card_and_pushes_the_folder(tmp_path, recorded_uploads, monkeypatch, capsys):
    """train_pretrain.py, 2 updates of a tiny model in this process: the output folder is a complete Hub folder with
    a pretraining card whose validation figures are those of the run's own log, and --push_to_hub uploads it
    (create_repo + upload_folder with the right arguments; no Accelerate checkpoints)."""
    from hf_wav2vec2.cli import train_pretrain

    data = tmp_path / "LibriSpeech"
    _write_librispeech_split(data, "train-clean", 6)
    _write_librispeech_split(data, "dev-clean", 2)
    config = tmp_path / "tiny_config"
    tiny_config().save_pretrained(config)
    output = tmp_path / "w2v2-pre"
    monkeypatch.setattr(sys, "argv", [
        "train_pretrain.py", "--dataset_name", str(data), "--train_split_name", "train-clean",
        "--eval_split_name", "dev-clean",
        "--config", str(config), "--output_dir", str(output), "--max_steps", "2", "--save_steps", "2",
        "--eval_steps", "2", "--logging_steps", "1", "--max_tokens", "64000", "--min_duration_s", "0.5",
        "--num_workers", "0", "--huge_pages", "false", "--push_to_hub", "--hub_model_id", "me/w2v2-pre",
        "--hub_token", "hf_test", "--hub_private_repo", "true"])
    train_pretrain.main()

    assert check_hub_folder(output) == []
    config_json = json.loads((output / "config.json").read_text())
    assert config_json["architectures"] == ["W2V2ForPreTraining"]
    assert config_json["auto_map"]["AutoModelForPreTraining"] == "modeling.W2V2ForPreTraining"
    # the push: one create_repo, one upload of the output folder as it was at that moment
    create, upload = recorded_uploads
    assert (create["create"], create["private"], create["exist_ok"]) == ("me/w2v2-pre", True, True)
    assert upload["repo_id"] == "me/w2v2-pre" and upload["folder_path"] == os.fspath(output)
    assert "checkpoints/*" in upload["ignore_patterns"]
    uploaded = set(filter_repo_objects(sorted(upload["files"]), ignore_patterns=upload["ignore_patterns"]))
    assert {"README.md", "config.json", "model.safetensors", "modeling.py", "configuration.py",
            "preprocessor_config.json", "train_history.json"} <= uploaded
    assert not any(name.startswith("checkpoints/") for name in uploaded)
    assert any(name.startswith("checkpoints/") for name in upload["files"])  # they exist, but stay here

    # the card: pretraining metadata, data, updates, recipe, final figures equal to the run's own log lines
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"step"')]
    last_val = [entry for entry in logged if "val_contrastive_loss" in entry][-1]
    last_update = [entry for entry in logged if "code_perplexity" in entry][-1]
    assert last_val["step"] == last_update["step"] == 2
    card = ModelCard.load(output / "README.md")
    assert card.data.tags == ["wav2vec2", "hf_wav2vec2", "speech", "self-supervised-learning"]
    assert card.data.language == "en" and card.data.datasets is None and card.data.eval_results is None
    rows = dict(line.strip("|").split(" | ", 1) for line in card.text.splitlines() if line.startswith("| ")
                and line.count(" | ") == 1)
    rows = {k.strip(): v.strip(" |") for k, v in rows.items()}
    assert float(rows["contrastive loss per masked frame (dev)"]) == pytest.approx(last_val["val_contrastive_loss"],
                                                                                  abs=1e-4)
    assert float(rows["accuracy (dev)"]) == pytest.approx(last_val["val_accuracy"], abs=1e-4)
    assert float(rows["codebook perplexity, hard (last update)"]) == pytest.approx(last_update["code_perplexity"],
                                                                                   abs=1e-4)
    assert rows["updates"] == "2" and rows["preset / config"] == "tiny_config"
    for needle in ("local folder `LibriSpeech` (not a Hub dataset), split `train-clean`", "## Fine-tuning",
                   "w2v2-train-ctc --model_name_or_path me/w2v2-pre", "It does not transcribe",
                   "on padded batches the outputs differ from stock transformers", "## Framework versions"):
        assert needle in card.text, needle
    assert str(tmp_path) not in card.content and "vocabulary" not in rows  # no local path; no CTC vocabulary
