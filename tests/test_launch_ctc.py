"""train_ctc.py under the multi-process launchers on CPU (gloo): accelerate launch and torchrun, two processes.

Every epoch, the two processes together train on each utterance exactly once (accelerate's sharding pads an uneven
last round with repeats unless the batch count is a multiple of the process count), the batch order changes from
epoch to epoch, also in an epoch resumed in the middle (where accelerate's wrappers hide the batch sampler from the
Trainer's ``set_epoch``); only the main process logs and writes; the output folder loads. What each process trained
on comes from ``--batch_record`` (``hf_wav2vec2.training.finetune.BatchRecord``). The single-process
``python train_ctc.py`` path is tests/test_finetune.py::test_train_ctc_end_to_end (resumed: tests/test_faults.py).
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from accelerate.data_loader import BatchSamplerShard, DataLoaderShard, skip_first_batches
from conftest import free_port, tiny_config

from hf_wav2vec2 import W2V2ForCTC, W2V2ForPreTraining
from hf_wav2vec2.data.batching import MaxTokensBatchSampler
from hf_wav2vec2.training.finetune import EpochToSampler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ["A CAT", "THE HAT", "SAT", "A BAT", "TAT", "CAB", "AT"]
LENGTHS = [8000 + 1600 * i for i in range(len(TEXTS))]
MAX_TOKENS = 30000  # packs LENGTHS into 5 batches: an odd count, which two processes cannot share evenly
EPOCHS, UPDATES_PER_EPOCH = 3, 3  # 5 batches evened to 6: 3 per process and epoch
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def ctc_folder(tmp_path_factory):
    """A split folder of seven 0.5-0.9 s utterances with transcripts, and a tiny pretraining folder to start from."""
    root = tmp_path_factory.mktemp("launch")
    chapter = root / "split" / "7" / "1"
    chapter.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, length in enumerate(LENGTHS):
        sf.write(chapter / f"7-1-{i:04d}.flac", 0.1 * rng.standard_normal(length), 16000)
    (chapter / "7-1.trans.txt").write_text("".join(f"7-1-{i:04d} {t}\n" for i, t in enumerate(TEXTS)))
    torch.manual_seed(0)
    W2V2ForPreTraining(tiny_config()).save_pretrained(root / "start")
    return root


def _launch(launcher: list[str], folder, output, record, *extra) -> subprocess.CompletedProcess:
    """Run train_ctc.py under ``launcher``; a hang fails within TIMEOUT_S, with every process's Python stack (the
    whole process group gets SIGABRT, which PYTHONFAULTHANDLER turns into tracebacks), instead of stalling."""
    command = [*launcher, os.path.join(ROOT, "train_ctc.py"), "--model_name_or_path", str(folder / "start"),
               "--dataset_name", str(folder / "split"), "--output_dir", str(output), "--num_train_epochs", str(EPOCHS),
               "--max_tokens", str(MAX_TOKENS), "--freeze_finetune_updates", "1", "--learning_rate", "1e-3",
               "--logging_steps", "1", "--save_steps", "1", "--save_total_limit", "20", "--ddp_timeout", "120",
               "--disable_tqdm", "true", "--report_to", "none", "--batch_record", str(record), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONFAULTHANDLER": "1",
           # what the script's restart would set (huge pages), without paying a second start-up per process
           "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGABRT)
        try:
            stdout, stderr = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(launcher)} train_ctc.py hung for {TIMEOUT_S} s:\n{stderr[-6000:]}")
    assert process.returncode == 0, stderr[-4000:]
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _records(record) -> dict[int, dict[int, list[list[str]]]]:
    """process -> epoch -> the batches (utterance ids) it collated, in order."""
    per_process = {}
    for process in (0, 1):
        epochs = per_process.setdefault(process, {})
        with open(f"{record}.{process}") as handle:
            for line in handle:
                row = json.loads(line)
                epochs.setdefault(row["epoch"], []).append(row["ids"])
    return per_process


def _losses(output) -> dict[int, float]:
    history = json.loads((output / "eval_results.json").read_text())["log_history"]
    return {row["step"]: row["loss"] for row in history if "loss" in row}


@pytest.fixture(scope="module")
def accelerate_run(ctc_folder, tmp_path_factory):
    """Three epochs with ``accelerate launch --multi_gpu --num_processes 2`` on CPU (accelerate 1.15's ``--cpu
    --num_processes 2`` starts a single process: its multi-CPU launch goes through mpirun)."""
    work = tmp_path_factory.mktemp("accelerate_run")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(free_port())]
    run = _launch(launcher, ctc_folder, work / "out", work / "record")
    return work, run


def test_accelerate_launch_two_processes_each_utterance_once_per_epoch(accelerate_run):
    work, run = accelerate_run
    records = _records(work / "record")
    everything = sorted(f"7-1-{i:04d}" for i in range(len(TEXTS)))
    orders = []
    for epoch in range(EPOCHS):
        batches = [records[process][epoch] for process in (0, 1)]
        assert [len(b) for b in batches] == [UPDATES_PER_EPOCH] * 2, epoch  # same number of steps, no padding
        assert sorted(i for process in batches for batch in process for i in batch) == everything, epoch
        orders.append(batches)
    assert orders[0] != orders[1] != orders[2] != orders[0]  # a new order every epoch
    assert set(records[0]) == set(records[1]) == set(range(EPOCHS))

    # only the main process logs, prints and writes; the output folder loads
    updates = EPOCHS * UPDATES_PER_EPOCH
    assert sorted(_losses(work / "out")) == list(range(1, updates + 1))
    assert (run.stdout + run.stderr).count("'loss': ") == updates
    assert run.stdout.count("model, processor and model card:") == 1
    assert sorted(p.name for p in (work / "out").glob("checkpoint-*")) == sorted(
        f"checkpoint-{step}" for step in range(1, updates + 1))
    model = W2V2ForCTC.from_pretrained(work / "out")
    from transformers import pipeline

    text = pipeline("automatic-speech-recognition", model=str(work / "out"))(
        np.zeros(8000, dtype=np.float32))["text"]
    assert isinstance(text, str) and model.config.vocab_size == 3 + len(set("".join(TEXTS)) - {" "})  # [PAD] [UNK] |


def test_torchrun_two_processes_resumed_mid_epoch_continues_exactly(accelerate_run, ctc_folder, tmp_path):
    """checkpoint-4 is one update into the second epoch. Resumed from it with torchrun, each process trains on the
    rest of that epoch's batches and then the third epoch's, exactly as the unbroken run did (before the fix the
    resumed epoch replayed epoch 0's order: one utterance twice, another never), with the same losses."""
    work, _ = accelerate_run
    shutil.copytree(work / "out" / "checkpoint-4", tmp_path / "out" / "checkpoint-4")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(free_port())]
    _launch(launcher, ctc_folder, tmp_path / "out", tmp_path / "record", "--resume_from_checkpoint", "latest")
    unbroken, resumed = _records(work / "record"), _records(tmp_path / "record")
    for process in (0, 1):
        assert resumed[process] == {1: unbroken[process][1][1:], 2: unbroken[process][2]}, process
    losses = _losses(tmp_path / "out")
    assert sorted(losses) == list(range(1, EPOCHS * UPDATES_PER_EPOCH + 1))
    assert losses == pytest.approx(_losses(work / "out"), rel=1e-5)


# -------------------------------------------------------------------------- the same, without processes
def test_epoch_reaches_the_sampler_through_accelerates_wrappers():
    """What a process of a two-process run iterates when resumed one batch into epoch 3: accelerate's
    ``BatchSamplerShard`` inside ``skip_first_batches``'s wrapper. The Trainer's ``set_epoch`` reaches the sampler
    through ``EpochToSampler``, and the batches are epoch 3's."""
    dataset = list(range(len(LENGTHS)))
    sampler = MaxTokensBatchSampler(LENGTHS, MAX_TOKENS, seed=1, num_batches_multiple=2)
    prepared = DataLoaderShard(EpochToSampler(dataset, sampler), batch_sampler=BatchSamplerShard(sampler, 2, 1),
                               collate_fn=list)
    resumed = skip_first_batches(prepared, 1)
    resumed.set_epoch(3)
    assert sampler.epoch == 3
    fresh = MaxTokensBatchSampler(LENGTHS, MAX_TOKENS, seed=1, num_batches_multiple=2)
    fresh.set_epoch(3)
    assert list(resumed) == list(fresh)[1::2][1:]  # process 1's batches of epoch 3, less the first


def test_fsdp_on_cpu_is_refused_not_ignored(ctc_folder, tmp_path, monkeypatch):
    """accelerate 1.15 turns FSDP on only for accelerator devices: `torchrun --nproc_per_node 2 train_ctc.py --fsdp
    full_shard` on CPU trained with DDP without a word. The script now stops at start and says so."""
    from hf_wav2vec2.cli import train_ctc

    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")  # TrainingArguments sets it: undone after the test
    monkeypatch.setattr(sys, "argv", ["train_ctc.py", "--model_name_or_path", str(ctc_folder / "start"),
                                      "--dataset_name", str(ctc_folder / "split"),
                                      "--output_dir", str(tmp_path / "out"), "--huge_pages", "false",
                                      "--report_to", "none", "--fsdp", "full_shard"])
    with pytest.raises(SystemExit, match="--fsdp needs GPUs"):
        train_ctc.main()
    assert not (tmp_path / "out").exists()


def test_torch_compile_option_gives_the_eager_losses_in_another_process(ctc_folder, tmp_path):
    """``--torch_compile_backend aot_eager`` (compile_stages; no C++ compiler needed) gives the losses of the eager
    run, in another process: runs repeat exactly (the new CTC head is initialised after seeding; it once drew from
    the unseeded RNG, and two runs started from different heads)."""
    losses = []
    for name, extra in (("eager", []), ("compiled", ["--torch_compile_backend", "aot_eager"])):
        output = tmp_path / name
        command = [sys.executable, os.path.join(ROOT, "train_ctc.py"), "--model_name_or_path",
                   str(ctc_folder / "start"), "--dataset_name", str(ctc_folder / "split"), "--output_dir", str(output),
                   "--max_steps", "3", "--max_tokens", str(MAX_TOKENS), "--freeze_finetune_updates", "1",
                   "--learning_rate", "1e-3", "--logging_steps", "1", "--save_steps", "100", "--disable_tqdm", "true",
                   "--report_to", "none", "--huge_pages", "false", *extra]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        run = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
        assert run.returncode == 0, run.stderr[-4000:]
        losses.append(_losses(output))
    assert sorted(losses[0]) == [1, 2, 3]
    for step, loss in losses[0].items():
        assert losses[1][step] == pytest.approx(loss, rel=1e-4)


def test_two_processes_evaluate_a_split_as_one_process_does(accelerate_run, ctc_folder, tmp_path):
    """Batches built by total audio hold different numbers of utterances and frames on each process; the Trainer
    used to gather their logits and died (gloo: "Received data size doesn't match expected size"). Each process now
    sums edit counts per batch: with one utterance a batch, two processes give exactly one process's WER and CER."""
    work, _ = accelerate_run
    driver = os.path.join(ROOT, "tests", "ctc_eval_driver.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1", "PYTHONPATH": ROOT}
    results = {}
    for name, launcher in (("one", [sys.executable]),
                           ("two", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                    "--master_port", str(free_port())])):
        out = tmp_path / f"{name}.json"
        run = subprocess.run([*launcher, driver, str(work / "out"), str(ctc_folder / "split"), str(out)], env=env,
                             cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
        assert run.returncode == 0, run.stderr[-3000:]
        results[name] = json.loads(out.read_text())
    one, two = results["one"], results["two"]
    assert (one["processes"], two["processes"]) == (1, 2)
    assert (two["eval_wer"], two["eval_cer"]) == (one["eval_wer"], one["eval_cer"]) and one["eval_wer"] > 0
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5)
