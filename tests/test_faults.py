"""Nothing lost, nothing silent: non-finite and empty updates, input checks, checkpoint folders (lineage, resume from
an older checkpoint, a crafted pickle, a full disk), over-long utterances, and the real pretraining script killed
with SIGKILL mid-run and mid-save, whose resumed loss history equals the unbroken run's across epoch boundaries.

Run as a script, this file is the driver of that kill test (one interpreter imports the script once, then forks
one child per run, so the test pays the import time once)."""

import errno
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))


# ------------------------------------------------------------------------------------ CTC: non-finite guard
def _ctc_trainer(tmp_path, collator, *, max_steps, max_consecutive_skips=10, callbacks=(), poison=lambda step: False):
    """A tiny CTCTrainer; ``poison(global_step)``: that update's logits become NaN (the model refuses NaN audio)."""
    from conftest import tiny_config
    from transformers import TrainingArguments

    from hf_wav2vec2 import W2V2ForCTC
    from hf_wav2vec2.training.finetune import CTCTrainer

    torch.manual_seed(0)
    model = W2V2ForCTC(tiny_config(vocab_size=8, pad_token_id=0, ctc_loss_reduction="sum", ctc_zero_infinity=True,
                                   freeze_finetune_updates=0, mask_time_prob=0.0))
    rng = np.random.default_rng(0)
    data = [{"input_values": rng.standard_normal(4000).astype(np.float32), "labels": [3, 4, 5]} for _ in range(8)]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=max_steps, learning_rate=1e-2,
                             per_device_train_batch_size=2, report_to=[], save_strategy="no",
                             remove_unused_columns=False, disable_tqdm=True, max_grad_norm=0.0, logging_steps=1)
    trainer = CTCTrainer(model=model, args=args, train_dataset=data, data_collator=collator,
                         max_consecutive_skips=max_consecutive_skips, callbacks=list(callbacks))
    model.lm_head.register_forward_hook(
        lambda module, inputs, output: output * float("nan") if poison(trainer.state.global_step) else None)
    return trainer


def _collate(examples):
    audio = torch.tensor(np.stack([e["input_values"] for e in examples]))
    return {"input_values": audio, "attention_mask": torch.ones_like(audio, dtype=torch.long),
            "labels": torch.tensor([e["labels"] for e in examples])}


class _Snapshots:
    """Weights and Adam moments after every update."""

    def __init__(self):
        from transformers import TrainerCallback

        outer = self
        self.weights, self.moments = [], []

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
                outer.weights.append({n: p.detach().clone() for n, p in model.named_parameters()})
                head = model.lm_head.weight
                moment = optimizer.state.get(head, {}).get("exp_avg")
                outer.moments.append(None if moment is None else moment.clone())

        self.callback = Callback()


def test_ctc_non_finite_update_is_skipped_and_counted(tmp_path, caplog):
    snapshots = _Snapshots()
    trainer = _ctc_trainer(tmp_path, _collate, max_steps=4, callbacks=[snapshots.callback],
                           poison=lambda step: step == 1)  # the second update
    with caplog.at_level(logging.WARNING, logger="hf_wav2vec2.training"):
        trainer.train()
    w = snapshots.weights
    assert len(w) == 4
    assert all(torch.isfinite(p).all() for p in w[-1].values())  # today: 76 of 85 tensors NaN
    assert all(torch.equal(w[1][n], w[0][n]) for n in w[0])  # the skipped update changed nothing
    assert torch.equal(snapshots.moments[1], snapshots.moments[0])  # nor Adam's moments
    assert not torch.equal(w[2]["lm_head.weight"], w[1]["lm_head.weight"])  # and training went on
    assert trainer.skip_guard.skipped_updates == 1 and trainer.skip_guard.consecutive_skips == 0
    assert "update 2 skipped: non-finite" in caplog.text
    logged = [entry for entry in trainer.state.log_history if "skipped_updates" in entry]
    assert logged and logged[-1]["skipped_updates"] == 1


def test_ctc_consecutive_non_finite_updates_stop_the_run(tmp_path):
    from hf_wav2vec2.training.skips import TrainingStopped

    snapshots = _Snapshots()
    trainer = _ctc_trainer(tmp_path, _collate, max_steps=10, max_consecutive_skips=3, callbacks=[snapshots.callback],
                           poison=lambda step: True)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with pytest.raises(TrainingStopped, match="3 consecutive updates skipped at update 3"):
        trainer.train()
    assert all(torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())


def test_ctc_updates_without_usable_examples_are_skipped(tmp_path):
    from hf_wav2vec2.training.skips import TrainingStopped

    trainer = _ctc_trainer(tmp_path, lambda examples: None, max_steps=10, max_consecutive_skips=2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with pytest.raises(TrainingStopped, match=r"0 non-finite, 2 without usable audio"):
        trainer.train()
    assert all(torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
    assert not trainer.optimizer.state  # Adam never stepped


# ------------------------------------------------------------------------------ pretraining: skipped updates
def _pretraining_setup():
    from accelerate import Accelerator
    from conftest import tiny_config

    from hf_wav2vec2 import W2V2ForPreTraining
    from hf_wav2vec2.training.pretraining import PretrainingState

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = W2V2ForPreTraining(tiny_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    poisoned = []  # append to make the next forward passes non-finite (the model refuses NaN audio)
    model.project_hid.register_forward_hook(lambda m, i, output: output * float("nan") if poisoned else None)
    return accelerator, model, optimizer, scheduler, PretrainingState(), poisoned


def _audio_batch():
    audio = torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))
    return {"input_values": audio, "attention_mask": torch.ones_like(audio, dtype=torch.long)}


def test_pretraining_empty_batches_are_not_updates_and_non_finite_ones_change_nothing():
    from hf_wav2vec2.training.pretraining import pretraining_update
    from hf_wav2vec2.training.skips import TrainingStopped

    accelerator, model, optimizer, scheduler, state, poisoned = _pretraining_setup()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    lr = scheduler.get_last_lr()
    # every file of the batch was unusable: no update at all (today: an update with loss 0.0)
    assert pretraining_update(accelerator, model, optimizer, scheduler, [None], state) is None
    assert (state.step, state.empty_updates, state.history) == (0, 1, [])
    assert scheduler.scheduler.last_epoch == 0 and scheduler.get_last_lr() == lr and not optimizer.state
    # a non-finite loss: skipped, counted, weights and Adam untouched; it uses its slot of max_steps and LR step
    poisoned.append(True)
    metrics = pretraining_update(accelerator, model, optimizer, scheduler, [_audio_batch()], state)
    assert state.skipped_updates == 1 and state.step == 1 and scheduler.scheduler.last_epoch == 1
    assert not np.isfinite(metrics["loss"]) and not optimizer.state
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    # a good update resets the run of skips
    poisoned.clear()
    pretraining_update(accelerator, model, optimizer, scheduler, [_audio_batch()], state)
    assert state.consecutive_skips == 0 and optimizer.state
    # the third skip in a row stops the run
    for expected in (1, 2):
        pretraining_update(accelerator, model, optimizer, scheduler, [None], state, max_consecutive_skips=3)
        assert state.consecutive_skips == expected
    poisoned.append(True)
    with pytest.raises(TrainingStopped, match="3 consecutive updates skipped"):
        pretraining_update(accelerator, model, optimizer, scheduler, [_audio_batch()], state,
                           max_consecutive_skips=3)


# ------------------------------------------------------------------------------------- checkpoint folders
def _fake_checkpoint(folder, step, run_id="a", marker="training_state.json"):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / marker).write_text(json.dumps({"run_id": run_id, "step": step}))
    return path


def test_output_folder_of_another_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    from hf_wav2vec2.training.checkpoints import check_output_dir

    folder = tmp_path / "checkpoints"
    _fake_checkpoint(folder, 4)
    options = dict(marker="training_state.json", model_files=[str(tmp_path / "model.safetensors")])
    with pytest.raises(ValueError, match="already holds another run .*--resume_from_checkpoint latest"):
        check_output_dir(str(folder), resume=None, overwrite=False, **options)
    assert check_output_dir(str(folder), resume="latest", overwrite=False, **options) == str(folder / "checkpoint-4")
    (tmp_path / "model.safetensors").write_text("x")
    assert check_output_dir(str(folder), resume=None, overwrite=True, **options) is None
    assert not os.listdir(folder) and not (tmp_path / "model.safetensors").exists()
    with pytest.raises(ValueError, match="no such folder"):
        check_output_dir(str(folder), resume=str(tmp_path / "nope"), overwrite=False, **options)


def test_resuming_an_older_checkpoint_sets_later_ones_aside_and_pruning_keeps_other_lineages(tmp_path):
    from hf_wav2vec2.training.checkpoints import check_output_dir, latest_checkpoint, prune_checkpoints

    folder = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        _fake_checkpoint(folder, step)
    (folder / "checkpoint-8").mkdir()  # killed while saving: no marker
    assert latest_checkpoint(str(folder), "training_state.json") == str(folder / "checkpoint-6")
    resume = check_output_dir(str(folder), marker="training_state.json", resume=str(folder / "checkpoint-2"),
                              overwrite=False, model_files=[])
    assert resume == str(folder / "checkpoint-2")
    (aside,) = [n for n in os.listdir(folder) if n.startswith("superseded-")]
    assert sorted(os.listdir(folder / aside)) == ["checkpoint-4", "checkpoint-6", "checkpoint-8"]  # kept, not lost
    # the resumed run's saves of updates 4 and 6 no longer collide; pruning keeps its newest 2 and never touches
    # a checkpoint of another lineage
    _fake_checkpoint(folder, 4)
    _fake_checkpoint(folder, 5, run_id="other")
    _fake_checkpoint(folder, 6)
    prune_checkpoints(str(folder), 2, "a", "training_state.json")
    assert sorted(n for n in os.listdir(folder) if n.startswith("checkpoint")) == [
        "checkpoint-4", "checkpoint-5", "checkpoint-6"]


def test_pretraining_checkpoint_round_trip_loads_no_pickled_code(tmp_path):
    from hf_wav2vec2.training.pretraining import load_checkpoint, new_run_id, pretraining_update, save_checkpoint

    accelerator, model, optimizer, scheduler, state, poisoned = _pretraining_setup()
    state.run_id = new_run_id()
    pretraining_update(accelerator, model, optimizer, scheduler, [_audio_batch()], state)
    path = save_checkpoint(accelerator, str(tmp_path / "checkpoints"), state, keep=2)
    saved = json.loads(open(os.path.join(path, "training_state.json")).read())
    assert saved["step"] == 1 and saved["run_id"] == state.run_id
    assert not [n for n in os.listdir(path) if n.startswith("custom_checkpoint")]

    # a crafted optimizer file: loading it must not run its code
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(os.path.join(path, "optimizer.bin"), "wb") as handle:
        pickle.dump({"state": Exploit()}, handle)
    _, model2, optimizer2, scheduler2, state2, _ = _pretraining_setup()
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(accelerator, path, state2)
    assert not marker.exists()
    # an old-format checkpoint (pickled custom state) is refused by name
    old = tmp_path / "old"
    old.mkdir()
    (old / "custom_checkpoint_0.pkl").write_bytes(b"")
    with pytest.raises(ValueError, match="older version.*unpickling can run code"):
        load_checkpoint(accelerator, str(old), state2)


def test_disk_full_while_saving_names_the_folder_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from hf_wav2vec2.training.pretraining import latest_checkpoint, new_run_id, save_checkpoint

    accelerator, model, optimizer, scheduler, state, poisoned = _pretraining_setup()
    state.run_id, state.step = new_run_id(), 2
    folder = str(tmp_path / "checkpoints")
    good = save_checkpoint(accelerator, folder, state, keep=2)
    state.step = 4

    def full(path, *args, **kwargs):
        os.makedirs(path, exist_ok=True)
        open(os.path.join(path, "model.safetensors"), "w").write("half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 8768 vs 8656")

    monkeypatch.setattr(accelerator, "save_state", full)
    with pytest.raises(OSError, match=r"disk full while saving the checkpoint .*checkpoint-4 .*checkpoint-2 is "
                                      r"intact") as raised:
        save_checkpoint(accelerator, folder, state, keep=2)
    assert raised.value.errno == errno.ENOSPC
    assert sorted(os.listdir(folder)) == ["checkpoint-2"]
    assert latest_checkpoint(folder, "training_state.json") == good


# ---------------------------------------------------------------------------------- over-long utterances
def test_over_long_utterances_are_named_and_skipped_or_batched_alone(caplog):
    from hf_wav2vec2.data.batching import MaxTokensBatchSampler

    names = ["a.flac", "long.flac", "b.flac"]
    with pytest.raises(ValueError, match=r"long.flac \(500 samples\); raise it"):
        MaxTokensBatchSampler([100, 500, 100], 400, names=names, advice="raise it")
    with caplog.at_level(logging.WARNING, logger="hf_wav2vec2.data"):
        skipping = MaxTokensBatchSampler([100, 500, 100], 400, names=names, too_long="skip")
    assert "skipping long.flac: 500 samples" in caplog.text
    for epoch in range(3):
        skipping.set_epoch(epoch)
        assert sorted(i for batch in skipping for i in batch) == [0, 2]
    alone = MaxTokensBatchSampler([100, 500, 100], 400, names=names, too_long="alone", shuffle=False)
    assert list(alone) == [[1], [0, 2]]


# ------------------------------------------------------------------------------------- script input checks
def _script(name, monkeypatch):
    import importlib

    module = importlib.import_module(f"hf_wav2vec2.cli.{name}")
    monkeypatch.setattr(module, "use_huge_pages", lambda: None)
    return module


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """Six 1 s noise files in a plain folder, and a config for a small pretraining model."""
    import soundfile as sf

    from hf_wav2vec2 import W2V2Config

    root = tmp_path_factory.mktemp("audio")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # 1.0 .. 1.5 s: 5 batches of at most 40000 samples per epoch
        sf.write(root / "audio" / f"u{i}.wav", (0.1 * rng.standard_normal(16000 + 1600 * i)).astype(np.float32),
                 16000)
    W2V2Config.tiny(num_hidden_layers=1, conv_dim=(16,) * 7, hidden_size=16, num_attention_heads=2,
                    intermediate_size=32, num_conv_pos_embeddings=16, codevector_dim=16, proj_codevector_dim=16,
                    num_codevectors_per_group=8, num_negatives=5, mask_time_min_masks=1,
                    ).save_pretrained(root / "config")
    return root


def _pretrain_argv(folder, output, *extra):
    return ["train_pretrain.py", "--dataset_name", str(folder / "audio"), "--config", str(folder / "config"),
            "--output_dir", str(output), "--max_steps", "24", "--save_steps", "5", "--logging_steps", "100",
            "--eval_steps", "1000", "--max_tokens", "40000", "--min_duration_s", "0.5", "--num_workers", "0",
            "--huge_pages", "false", *extra]


def test_pretraining_script_checks_its_inputs_before_work(tiny_folder, tmp_path, monkeypatch):
    script = _script("train_pretrain", monkeypatch)
    for bad, message in ((["--max_steps", "-5"], "--max_steps must be a positive integer, got -5"),
                         (["--save_steps", "0"], "--save_steps must be a positive integer")):
        monkeypatch.setattr(sys, "argv", _pretrain_argv(tiny_folder, tmp_path / "a", *bad))
        with pytest.raises(ValueError, match=message):
            script.main()
    monkeypatch.setattr(sys, "argv", _pretrain_argv(tiny_folder, tmp_path / "a", "--min_duration_s", "60"))
    with pytest.raises(ValueError, match="no usable training audio"):  # today: loops forever
        script.main()
    (tmp_path / "b" / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    monkeypatch.setattr(sys, "argv", _pretrain_argv(tiny_folder, tmp_path / "b"))
    with pytest.raises(ValueError, match="already holds another run"):
        script.main()


# ------------------------------------------------------------------- kill -9 mid-run and mid-save, resume
def test_pretraining_killed_mid_run_and_mid_save_resumes_exactly(tiny_folder, tmp_path):
    """24 updates over 5 batches per epoch (5 epochs). Run A is killed (SIGKILL) right after update 7; run B
    resumes from checkpoint-5 and is killed while writing checkpoint-15 (state files half there); run C resumes
    from checkpoint-10 and finishes. Its history must equal the unbroken run's, update for update."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    result = subprocess.run([sys.executable, os.path.abspath(__file__), str(tiny_folder), str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["exit"] == {"unbroken": 0, "killed_mid_run": -signal.SIGKILL, "killed_mid_save": -signal.SIGKILL,
                              "resumed": 0}
    unbroken = json.loads((tmp_path / "unbroken" / "train_history.json").read_text())["history"]
    resumed = json.loads((tmp_path / "broken" / "train_history.json").read_text())["history"]
    assert len(unbroken) == 24 and resumed == unbroken
    assert report["epochs"] >= 4  # the resumed stretches cross several epoch boundaries


def _driver(folder: str, work: str) -> None:
    """Fork one child per run of ``train_pretrain.main``; SIGKILL it at the chosen point; report exit codes."""
    from pathlib import Path

    import hf_wav2vec2.cli.train_pretrain as script

    folder, work = Path(folder), Path(work)
    script.use_huge_pages = lambda: None

    def run(output, kill_after_update=None, kill_in_save=None, *extra):
        pid = os.fork()
        if pid == 0:
            try:
                original_update, original_save = script.pretraining_update, script.save_checkpoint

                def update(*args, **kwargs):
                    metrics = original_update(*args, **kwargs)
                    if args[5].step == kill_after_update:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return metrics

                def save(accelerator, checkpoints, state, keep):
                    if state.step == kill_in_save:
                        accelerator.save_state(os.path.join(checkpoints, f"partial-{state.step}"))
                        os.kill(os.getpid(), signal.SIGKILL)  # before training_state.json and the rename
                    return original_save(accelerator, checkpoints, state, keep)

                script.pretraining_update, script.save_checkpoint = update, save
                sys.argv = _pretrain_argv(folder, output, *extra)
                script.main()
                os._exit(0)
            except BaseException:
                import traceback

                traceback.print_exc()
                os._exit(1)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    exits = {"unbroken": run(work / "unbroken")}
    exits["killed_mid_run"] = run(work / "broken", 7)
    exits["killed_mid_save"] = run(work / "broken", None, 15, "--resume_from_checkpoint", "latest")
    exits["resumed"] = run(work / "broken", None, None, "--resume_from_checkpoint", "latest")
    state = json.loads((work / "broken" / "checkpoints" / "checkpoint-24" / "training_state.json").read_text())
    print(json.dumps({"exit": exits, "epochs": state["epoch"]}))


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    _driver(sys.argv[1], sys.argv[2])


# ------------------------------------------------------------------ CTC fine-tuning resumed across epochs
@pytest.fixture(scope="module")
def ctc_folder(tmp_path_factory):
    """A split folder of six 0.5-0.8 s utterances with transcripts, and a tiny pretraining folder to start from."""
    import soundfile as sf
    from conftest import tiny_config

    from hf_wav2vec2 import W2V2ForPreTraining

    root = tmp_path_factory.mktemp("ctc")
    chapter = root / "split" / "7" / "1"
    chapter.mkdir(parents=True)
    rng = np.random.default_rng(0)
    texts = ["A CAT", "THE HAT", "SAT", "A BAT", "TAT", "CAB"]
    for i in range(len(texts)):
        sf.write(chapter / f"7-1-{i:04d}.flac", 0.1 * rng.standard_normal(8000 + 1600 * i), 16000)
    (chapter / "7-1.trans.txt").write_text("".join(f"7-1-{i:04d} {t}\n" for i, t in enumerate(texts)))
    torch.manual_seed(0)
    W2V2ForPreTraining(tiny_config()).save_pretrained(root / "start")
    return root


def _ctc_argv(folder, output, *extra):
    return ["train_ctc.py", "--model_name_or_path", str(folder / "start"), "--dataset_name", str(folder / "split"),
            "--output_dir", str(output), "--max_steps", "13", "--save_steps", "3", "--save_total_limit", "10",
            "--logging_steps", "1", "--max_tokens", "22000", "--freeze_finetune_updates", "2", "--learning_rate",
            "1e-3", "--disable_tqdm", "true", "--huge_pages", "false", "--report_to", "none", *extra]


def test_ctc_fine_tuning_resumed_mid_epoch_continues_exactly_across_epochs(ctc_folder, tmp_path, monkeypatch):
    """13 updates of 5 batches per epoch. The unbroken run's checkpoint-3 (inside the first epoch) is copied into a
    fresh folder and resumed with ``--resume_from_checkpoint latest``: its losses from update 4 on, across the two
    following epoch boundaries, equal the unbroken run's."""
    script = _script("train_ctc", monkeypatch)
    monkeypatch.setattr(sys, "argv", _ctc_argv(ctc_folder, tmp_path / "unbroken"))
    script.main()
    shutil.copytree(tmp_path / "unbroken" / "checkpoint-3", tmp_path / "resumed" / "checkpoint-3")
    monkeypatch.setattr(sys, "argv", _ctc_argv(ctc_folder, tmp_path / "resumed", "--resume_from_checkpoint",
                                               "latest"))
    script.main()

    def losses(run):
        history = json.loads((tmp_path / run / "eval_results.json").read_text())["log_history"]
        return {row["step"]: row["loss"] for row in history if "loss" in row}

    unbroken, resumed = losses("unbroken"), losses("resumed")
    assert sorted(unbroken) == list(range(1, 14))
    assert json.loads((tmp_path / "unbroken" / "eval_results.json").read_text())["log_history"][-1]["epoch"] > 2
    assert resumed == unbroken  # 1-3 from the checkpoint's trainer state, 4-13 trained again


def test_ctc_script_checks_its_inputs_before_work(ctc_folder, tmp_path, monkeypatch):
    """Non-positive step counts, no usable utterance and an output folder of another run stop train_ctc.py at once
    (before: --max_steps -5 silently trained by epochs, an empty dataset trained 0 steps and saved a model)."""
    script = _script("train_ctc", monkeypatch)
    for bad, message in ((["--max_steps", "-5"], "--max_steps must be a positive number of updates"),
                         (["--max_tokens", "0"], "--max_tokens must be a positive integer"),
                         (["--min_duration_s", "60"], "no usable training utterance")):
        monkeypatch.setattr(sys, "argv", _ctc_argv(ctc_folder, tmp_path / "a", *bad))
        with pytest.raises(ValueError, match=message):
            script.main()
        assert not (tmp_path / "a" / "model.safetensors").exists()
    (tmp_path / "b" / "checkpoint-3").mkdir(parents=True)
    (tmp_path / "b" / "checkpoint-3" / "trainer_state.json").write_text("{}")
    monkeypatch.setattr(sys, "argv", _ctc_argv(ctc_folder, tmp_path / "b"))
    with pytest.raises(ValueError, match="already holds another run"):
        script.main()
