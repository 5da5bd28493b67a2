"""Distributed normalisation and exact resumption of pretraining; recipes, parameter groups and the scripts'
huge-pages option."""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import free_port, tiny_config

from hf_wav2vec2 import W2V2Config, W2V2ForPreTraining
from hf_wav2vec2.training import (
    FINETUNING_RECIPES,
    PRETRAINING_RECIPES,
    FinetuningRecipe,
    choose_finetuning_recipe,
    choose_pretraining_recipe,
    parameter_groups,
)

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)


def _run(cmd, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_two_processes_with_batch_b_equal_one_process_with_batch_2b(tmp_path):
    _run([sys.executable, os.path.join(HERE, "dist_driver.py"), str(tmp_path / "one.json"), "4"])
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
          os.path.join(HERE, "dist_driver.py"), str(tmp_path / "two.json"), "4"])
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    for a, b in zip(one["losses"], two["losses"]):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-5)
    assert one["weights_sum"] == pytest.approx(two["weights_sum"], rel=1e-6)
    assert one["weights_abs"] == pytest.approx(two["weights_abs"], rel=1e-6)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from hf_wav2vec2.corpus import synthesize_corpus

    root = tmp_path_factory.mktemp("corpus")
    synthesize_corpus(str(root), num_speakers=2, utterances_per_split=(12, 4, 4), seed=0)
    return root / "LibriSpeech"


def _pretrain(corpus, output_dir, *extra):
    from hf_wav2vec2 import W2V2Config

    config = output_dir.parent / "small_config"
    if not config.exists():
        W2V2Config.tiny(num_hidden_layers=2, conv_dim=(32,) * 7, hidden_size=32, num_attention_heads=2,
                        intermediate_size=64, num_conv_pos_embeddings=16, codevector_dim=16, proj_codevector_dim=16,
                        num_codevectors_per_group=8, num_negatives=10).save_pretrained(config)
    _run([sys.executable, os.path.join(ROOT, "train_pretrain.py"), "--dataset_name", str(corpus),
          "--train_split_name", "train-clean", "--eval_split_name", "dev-clean", "--config", str(config),
          "--output_dir", str(output_dir), "--max_steps", "4",
          "--save_steps", "2", "--eval_steps", "2", "--logging_steps", "1", "--max_tokens", "100000",
          "--num_workers", "0", *extra])
    return json.loads((output_dir / "train_history.json").read_text())


def test_resumed_run_continues_as_if_never_stopped(corpus, tmp_path):
    unbroken = _pretrain(corpus, tmp_path / "unbroken")
    checkpoints = tmp_path / "unbroken" / "checkpoints"
    assert sorted(os.listdir(checkpoints)) == ["checkpoint-2", "checkpoint-4"]

    # A run stopped after update 2, killed while writing its next checkpoint: only a partial folder is left.
    import shutil

    stopped = tmp_path / "stopped" / "checkpoints"
    stopped.mkdir(parents=True)
    shutil.copytree(checkpoints / "checkpoint-2", stopped / "checkpoint-2")
    (stopped / "partial-4").mkdir()
    resumed = _pretrain(corpus, tmp_path / "stopped", "--resume_from_checkpoint", "latest")
    assert resumed["history"] == unbroken["history"]  # steps 3 and 4 identical, bit for bit

    # The output folder is a model W2V2ForCTC fine-tunes from.
    from hf_wav2vec2 import W2V2ForCTC

    _, info = W2V2ForCTC.from_pretrained(tmp_path / "unbroken", output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["lm_head.bias", "lm_head.weight"]


def test_scripts_restart_once_with_huge_pages(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import os, sys\nprint('start', os.getpid(), os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])\n"
                      "from hf_wav2vec2.training.allocator import use_huge_pages\nuse_huge_pages()\nprint('main')\n")
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, str(script), "--x", "1"], capture_output=True, text=True, env=env,
                         check=True).stdout.splitlines()
    first, second = out[0].split(" ", 3), out[1].split(" ", 3)
    assert first[2] == "None" and second[2] == "glibc.malloc.hugetlb=1" and first[1] == second[1]  # same pid
    assert second[3] == "['--x', '1']" and out[2:] == ["main"]
    # an explicit setting (here the opt-out) is kept and nothing restarts
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                         env={**env, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}).stdout.splitlines()
    assert len(out) == 2 and out[1] == "main"


class _Restarted(Exception):
    """Stands in for the re-execution: nothing after ``use_huge_pages`` runs."""


@pytest.mark.parametrize("script", ["train_pretrain.py", "train_ctc.py"])
def test_scripts_huge_pages_option(script, tmp_path, monkeypatch):
    module = importlib.import_module(f"hf_wav2vec2.cli.{script[:-3]}")

    def restart():
        raise _Restarted

    monkeypatch.setattr(module, "use_huge_pages", restart)
    (tmp_path / "model").mkdir()
    # A run that gets past the restart stops at once: no such preset, or no such local dataset (never the Hub).
    argv = [script, "--dataset_name", str(tmp_path / "no_such_folder"), "--output_dir", str(tmp_path / "out")]
    argv += ["--config", "no_such_preset"] if script == "train_pretrain.py" else [
        "--model_name_or_path", str(tmp_path / "model")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(_Restarted):
        module.main()
    monkeypatch.setattr(sys, "argv", [*argv, "--huge_pages", "false"])
    with pytest.raises((ValueError, FileNotFoundError), match="no_such"):
        module.main()


def test_recipes_and_their_choice():
    base, large, tiny = W2V2Config.base(), W2V2Config.large_lv60(), W2V2Config.tiny()
    # fairseq's examples/wav2vec/config/finetuning/base_10h.yaml
    assert FINETUNING_RECIPES["10h"] == FinetuningRecipe(
        learning_rate=5e-5, max_steps=20_000, freeze_finetune_updates=10_000, mask_time_prob=0.65,
        mask_feature_prob=0.5, layerdrop=0.05, max_tokens=3_200_000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        FINETUNING_RECIPES["tiny"].learning_rate = 1.0
    for hours, name in ((10 / 60, "10m"), (0.5, "10m"), (1, "1h"), (10, "10h"), (100, "100h"), (960, "960h")):
        assert choose_finetuning_recipe("auto", base, hours) == choose_finetuning_recipe("auto", large, hours) == name
    assert choose_finetuning_recipe("auto", tiny, 960) == "tiny"  # narrower than BASE, whatever the hours
    assert choose_finetuning_recipe("10h", tiny, 0.1) == "10h"
    with pytest.raises(ValueError, match="unknown recipe '2h'"):
        choose_finetuning_recipe("2h", base, 2)
    assert choose_pretraining_recipe("large_lv60") == PRETRAINING_RECIPES["large_lv60"]
    assert choose_pretraining_recipe("runs/x/config.json") == PRETRAINING_RECIPES["base"]
    # a config.json goes by its width: a tiny model's file must not get BASE's 1.4M-sample batches
    assert choose_pretraining_recipe("runs/x/config.json", tiny) == PRETRAINING_RECIPES["tiny"]
    assert choose_pretraining_recipe("runs/x/config.json", large) == PRETRAINING_RECIPES["large_lv60"]
    assert choose_pretraining_recipe("runs/x/config.json", base) == PRETRAINING_RECIPES["base"]
    # what the command line sets wins; the rest comes from the recipe, on whichever arguments object has the field
    args = SimpleNamespace(freeze_finetune_updates=None, mask_time_prob=0.5, mask_feature_prob=None, layerdrop=None,
                           max_tokens=None)
    training_args = SimpleNamespace(learning_rate=None, max_steps=7)
    chosen = FINETUNING_RECIPES["10h"].fill_unset(args, training_args)
    assert list(chosen) == [f.name for f in dataclasses.fields(FinetuningRecipe)]
    assert chosen == {**dataclasses.asdict(FINETUNING_RECIPES["10h"]), "mask_time_prob": 0.5, "max_steps": 7}
    assert training_args.learning_rate == 5e-5 and args.layerdrop == 0.05 and args.mask_time_prob == 0.5


def test_parameter_groups_decay_weight_matrices_only():
    model = W2V2ForPreTraining(tiny_config())
    decay, no_decay = parameter_groups(model, 0.01)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.01, 0.0)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert decayed | undecayed == set(names.values()) and not decayed & undecayed
    assert {"quantizer.codevectors", "wav2vec2.masked_spec_embed", "project_q.bias",
            "wav2vec2.encoder.layer_norm.weight"} <= undecayed
    assert {"project_q.weight", "wav2vec2.feature_extractor.conv_layers.0.conv.weight",
            "wav2vec2.encoder.layers.0.attention.q_proj.weight"} <= decayed
    assert all(model.get_parameter(n).ndim >= 2 and "norm" not in n for n in decayed)


def test_gumbel_noise_from_a_generator_is_torch_gumbel_softmax():
    """The quantizer draws its Gumbel noise from the update's generator; with the global RNG it must be exactly
    torch's hard gumbel_softmax (same draws, same one-hot, same straight-through gradient)."""
    import torch
    from torch.nn import functional as F

    from hf_wav2vec2.quantizer import _hard_gumbel_softmax

    logits = torch.randn(6, 2, 5, requires_grad=True)
    weights = torch.randn(6, 2, 5)
    results = []
    for sample in (lambda: F.gumbel_softmax(logits, tau=0.7, hard=True),
                   lambda: _hard_gumbel_softmax(logits, 0.7, None)):
        torch.manual_seed(3)
        onehot = sample()
        (grad,) = torch.autograd.grad((onehot * weights).sum(), logits)
        results.append((onehot, grad))
    torch.testing.assert_close(results[0], results[1])
    a = _hard_gumbel_softmax(logits, 0.7, torch.Generator().manual_seed(5))
    b = _hard_gumbel_softmax(logits, 0.7, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.equal(a.sum(-1), torch.ones(6, 2))
