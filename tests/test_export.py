"""Export to stock transformers: a Python that never imports hf_wav2vec2 loads the folder with transformers' own
classes (no trust_remote_code) and gets our outputs; configs transformers cannot represent are refused; plain
save_pretrained folders carry a complete auto_map."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from huggingface_hub import metadata_load
from test_hub import make_processor

import hf_wav2vec2
from hf_wav2vec2 import W2V2ForCTC, W2V2ForPreTraining, W2V2Model
from hf_wav2vec2.export import export_to_transformers, main

REPO = Path(hf_wav2vec2.__file__).resolve().parents[1]

STOCK_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.modules["hf_wav2vec2"] = None  # an editable install would otherwise still be importable
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCTC, AutoModelForPreTraining, pipeline

    ctc_dir, pre_dir, out = sys.argv[1], sys.argv[2], sys.argv[3]
    audio = torch.from_numpy(np.load(out + "/audio.npy"))
    ctc = AutoModelForCTC.from_pretrained(ctc_dir).eval()
    base = AutoModel.from_pretrained(ctc_dir).eval()
    pre = AutoModelForPreTraining.from_pretrained(pre_dir).eval()
    with torch.no_grad():
        result = {"logits": ctc(audio).logits, "hidden": base(audio).last_hidden_state,
                  "pre_hidden": pre.wav2vec2(audio).last_hidden_state}
    asr = pipeline("automatic-speech-recognition", model=ctc_dir)
    torch.save(result, out + "/stock.pt")
    json.dump({"classes": [type(m).__module__ + "." + type(m).__name__ for m in (ctc, base, pre)],
               "config": AutoConfig.from_pretrained(ctc_dir).model_type, "text": asr(audio[0].numpy())["text"],
               "ours_imported": [n for n in sys.modules if n.startswith("hf_wav2vec2") and sys.modules[n]]},
              open(out + "/stock.json", "w"))
""")


def test_stock_transformers_loads_the_export_without_our_package(tmp_path):
    torch.manual_seed(0)
    processor = make_processor(tmp_path / "vocab")
    ctc = W2V2ForCTC(tiny_config(vocab_size=len(processor.tokenizer), feature_grad_mult=0.3)).eval()
    with torch.no_grad():
        ctc.lm_head.bias[4:10] += 3.0  # a few letters win some frames, so the transcript is not empty
    ctc.save_pretrained(tmp_path / "ours")
    processor.save_pretrained(tmp_path / "ours")
    (tmp_path / "ours" / "README.md").write_text("---\nlanguage: fr\nlicense: apache-2.0\ndatasets:\n- someone/speech\n"
                                                 "tags:\n- hf_wav2vec2\n---\n\n# ours\n")  # the training card
    main(["--format", "transformers", "--model", str(tmp_path / "ours"), "--output_dir", str(tmp_path / "stock")])
    pre = W2V2ForPreTraining(tiny_config("layer_preln", vocab_size=None)).eval()
    export_to_transformers(pre, tmp_path / "stock_pre")

    config = json.loads((tmp_path / "stock" / "config.json").read_text())
    assert config["model_type"] == "wav2vec2" and config["architectures"] == ["Wav2Vec2ForCTC"]
    assert "auto_map" not in config and config["feature_grad_mult"] == 0.3  # our fields ride along, unused
    assert not list((tmp_path / "stock").glob("*.py"))  # no code
    card = (tmp_path / "stock" / "README.md").read_text()
    assert "group norm" in card and "padded" in card.lower()
    # what the training card says of the weights stays: language, license, datasets
    assert {k: v for k, v in metadata_load(tmp_path / "stock" / "README.md").items() if k != "tags"} == {
        "language": "fr", "license": "apache-2.0", "datasets": ["someone/speech"], "library_name": "transformers",
        "pipeline_tag": "automatic-speech-recognition"}

    audio = np.random.default_rng(0).standard_normal((1, 8000)).astype(np.float32)  # unpadded
    np.save(tmp_path / "audio.npy", audio)
    (tmp_path / "stock.py").write_text(STOCK_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    run = subprocess.run([sys.executable, "-I", str(tmp_path / "stock.py"), str(tmp_path / "stock"),
                          str(tmp_path / "stock_pre"), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    stock = json.loads((tmp_path / "stock.json").read_text())
    assert stock["ours_imported"] == [] and stock["config"] == "wav2vec2"
    assert stock["classes"] == ["transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2ForCTC",
                                "transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2Model",
                                "transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2ForPreTraining"]
    tensors = torch.load(tmp_path / "stock.pt")
    x = torch.from_numpy(audio)
    with torch.no_grad():
        torch.testing.assert_close(tensors["logits"], ctc(x).logits, atol=1e-4, rtol=0)
        torch.testing.assert_close(tensors["hidden"], ctc.wav2vec2(x).last_hidden_state, atol=1e-4, rtol=0)
        torch.testing.assert_close(tensors["pre_hidden"], pre.wav2vec2(x).last_hidden_state, atol=1e-4, rtol=0)
        ids = ctc(x).logits.argmax(-1)
    assert stock["text"] == processor.batch_decode(ids)[0] and stock["text"].strip()
    # and back: the export loads into our classes, training fields included
    again = W2V2ForCTC.from_pretrained(tmp_path / "stock")
    assert again.config.feature_grad_mult == 0.3 and again.config.model_type == "w2v2"


def test_configs_transformers_cannot_represent_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"layer_norm_eps=1e-06"):
        export_to_transformers(W2V2ForCTC(tiny_config(layer_norm_eps=1e-6)), tmp_path / "a")
    with pytest.raises(ValueError, match=r"feat_extract_activation='relu'"):
        export_to_transformers(W2V2Model(tiny_config(feat_extract_activation="relu")), tmp_path / "b")
    assert not (tmp_path / "a").exists()


def test_save_pretrained_writes_a_complete_auto_map(tmp_path):
    for model, head in ((W2V2ForCTC(tiny_config()), "AutoModelForCTC"),
                        (W2V2ForPreTraining(tiny_config()), "AutoModelForPreTraining"),
                        (W2V2Model(tiny_config()), None)):
        folder = tmp_path / type(model).__name__
        model.save_pretrained(folder)
        auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
        expected = {"AutoConfig": "configuration.W2V2Config", "AutoModel": "modeling.W2V2Model"}
        if head:
            expected[head] = f"modeling.{type(model).__name__}"
        assert auto_map == expected
        assert (folder / "modeling.py").is_file() and (folder / "configuration.py").is_file()
