"""Hub folders: complete on their own (code + auto_map + processor + card), loadable with trust_remote_code in a
Python where hf_wav2vec2 cannot be imported, and pushed through huggingface_hub."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_config
from huggingface_hub import HfApi, ModelCard
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor, pipeline

import hf_wav2vec2
from hf_wav2vec2 import W2V2ForCTC, W2V2ForPreTraining
from hf_wav2vec2.hub import (
    ASRResult,
    ModelCardInfo,
    check_code_imports,
    check_hub_folder,
    copy_model_card,
    finetuned_model_card_info,
    push_hub_folder,
    save_hub_folder,
)

REPO = Path(hf_wav2vec2.__file__).resolve().parents[1]
CODE_FILES = {"modeling.py", "configuration.py", "feature_encoder.py", "masking.py", "transformer.py",
              "quantizer.py", "losses.py"}
CARD = {
    "model_name": "w2v2-tiny-test",
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
    folder = save_hub_folder(model, processor, root / "w2v2-tiny-test", card=CARD)
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
                   "from hf_wav2vec2.pipeline import asr_pipeline"):
        assert needle in text, needle
    info = ModelCardInfo.from_dict(CARD)
    assert isinstance(info.results[1], ASRResult) and info.results[1].decoding == "4-gram LM, beam 500"
    copied = copy_model_card(folder, "w2v2-tiny-test", tmp_path / "model_cards")
    assert copied == tmp_path / "model_cards" / "w2v2-tiny-test.md"
    assert copied.read_text() == (folder / "README.md").read_text()


def test_card_of_a_train_ctc_run(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "corpus.json").write_text("{}")  # what hf_wav2vec2.corpus writes beside its LibriSpeech layout
    pretrained = tmp_path / "pretrain"
    pretrained.mkdir()
    (pretrained / "train_history.json").write_text(json.dumps({"history": [{}, {}, {}], "seen_audio_h": 1.5}))
    args = SimpleNamespace(dataset=[str(corpus)], split="train-clean", eval_dataset=None, eval_split="dev-clean",
                           model_name_or_path=str(pretrained))
    training_args = SimpleNamespace(output_dir=str(tmp_path / "ctc-tiny"), hub_model_id=None, adam_beta2=0.98,
                                    adam_epsilon=1e-8)
    results = {"dev-clean": {"eval_wer": 0.25, "eval_cer": 0.1}, "test-clean": {"test_wer": 0.3, "test_cer": 0.125}}
    info = finetuned_model_card_info(args, training_args, "tiny", {"learning_rate": 1e-3}, 0.75, results)
    name = "hf_wav2vec2 synthetic corpus (eSpeak NG)"  # never "LibriSpeech" for its layout alone
    assert [(r.dataset_name, r.split, r.wer, r.cer) for r in info.results] == [
        (f"{name} dev-clean", "dev-clean", 0.25, 0.1), (f"{name} test-clean", "test-clean", 0.3, 0.125)]
    assert info.finetuning["training data"] == f"{name} train-clean" and info.finetuning["learning_rate"] == 1e-3
    assert info.pretraining["updates"] == 3 and info.pretraining["hours of audio seen"] == "1.50"
    assert (info.model_name, info.repo_id, info.base_model) == ("ctc-tiny", "ctc-tiny", None)


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
