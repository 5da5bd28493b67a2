"""CTC fine-tuning: vocabulary and processor, the collator's handling of bad examples, the freeze callback, the
tri-stage LR inside the Trainer, offline WER/CER, and train_ctc.py end to end from both checkpoint layouts."""

import json
import logging
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_config, tiny_hf_config
from datasets import Dataset
from transformers import TrainerCallback, TrainingArguments, Wav2Vec2ForPreTraining, Wav2Vec2Processor

from hf_wav2vec2 import W2V2Config, W2V2ForCTC, W2V2ForPreTraining
from hf_wav2vec2.corpus import synthesize_corpus
from hf_wav2vec2.data.batching import MaxTokensBatchSampler
from hf_wav2vec2.data.ctc import CTCCollator, build_processor, build_vocabulary, ctc_required_frames
from hf_wav2vec2.metrics import load_metric
from hf_wav2vec2.training import tri_stage_lr_lambda
from hf_wav2vec2.training.finetune import SUMMARY_FIELDS, CTCTrainer, edit_counts, summary_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRANSCRIPTS = ["and god said", "Let there be light.", "it's well-pleased"]


@pytest.fixture(scope="module")
def processor():
    return build_processor(build_vocabulary(TRANSCRIPTS))


def ctc_model(processor, **overrides):
    values = dict(vocab_size=len(processor.tokenizer), pad_token_id=0, ctc_zero_infinity=False)
    return W2V2ForCTC(tiny_config(**{**values, **overrides}))


def utterance(seconds: float, text: str, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"input_values": rng.standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1, "text": text}


# ------------------------------------------------------------------------------------ vocabulary, processor
def test_vocabulary_blank_zero_delimiter_and_sorted_letters():
    vocab = build_vocabulary(TRANSCRIPTS)
    assert list(vocab)[:3] == ["[PAD]", "[UNK]", "|"] and vocab["[PAD]"] == 0
    letters = sorted(set("".join(TRANSCRIPTS).upper()) & set("ABCDEFGHIJKLMNOPQRSTUVWXYZ'"))
    assert list(vocab)[3:] == letters  # normalised ("well-pleased" -> "WELL PLEASED"), no "-", "." or space
    assert list(vocab.values()) == list(range(len(vocab)))
    assert build_vocabulary(reversed(TRANSCRIPTS)) == vocab


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_processor_round_trip(tmp_path, norm):
    processor = build_processor(build_vocabulary(TRANSCRIPTS), feat_extract_norm=norm)
    processor.save_pretrained(tmp_path)
    loaded = Wav2Vec2Processor.from_pretrained(tmp_path)
    assert loaded.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert loaded.tokenizer.pad_token_id == 0 and len(loaded.tokenizer) == len(build_vocabulary(TRANSCRIPTS))
    assert loaded.feature_extractor.do_normalize == (norm == "layer")
    assert loaded.feature_extractor.return_attention_mask and loaded.feature_extractor.sampling_rate == 16000
    ids = loaded.tokenizer("LET THERE BE LIGHT").input_ids
    assert ids[3] == loaded.tokenizer.convert_tokens_to_ids("|")
    assert loaded.tokenizer.decode(ids, group_tokens=False) == "LET THERE BE LIGHT"


def test_ctc_required_frames_counts_repeats():
    assert ctc_required_frames([5, 6, 6, 6, 7]) == 5 + 2  # "HELLO"-like: a blank between equal neighbours
    assert ctc_required_frames([]) == 0 and ctc_required_frames([3]) == 1


# ------------------------------------------------------------------------------------------------- collator
def test_collator_pads_labels_with_minus_100(processor):
    model = ctc_model(processor)
    collator = CTCCollator(processor, model.num_frames)
    batch = collator([utterance(1.0, "and god said"), utterance(0.5, "let", seed=1)])
    assert batch["input_values"].shape == (2, 16000) and batch["attention_mask"][1].sum() == 8000
    labels = batch["labels"]
    assert labels.shape == (2, 12) and (labels[1, 3:] == -100).all() and (labels[0] >= 0).all()
    assert processor.tokenizer.decode(labels[1, :3].tolist()) == "LET"
    out = model(**batch)
    assert torch.isfinite(out.loss)


def test_collator_drops_bad_examples_and_reports(processor, tmp_path, caplog):
    model = ctc_model(processor)
    frames = model.num_frames
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"not audio at all" * 100)
    good = tmp_path / "good.flac"
    sf.write(good, utterance(1.0, "")["input_values"], 16000)
    # Ten L's need 10 + 9 = 19 frames (a blank between each pair), which 400 samples give: kept. Eleven need 21.
    samples = 400
    assert frames(samples) == 19
    examples = [
        utterance(1.0, "and god said"),  # kept
        utterance(1.0, "   "),  # empty after normalisation
        utterance(1.0, "said zed", seed=2),  # "Z" is not in the vocabulary -> [UNK], kept
        utterance(1.0, "said zz", seed=3),  # warned once per character only
        utterance(0.03, "and god said let there be light", seed=4),  # 31 labels, 480 samples give 23 frames
        {"id": "broken", "path": str(broken), "text": "let"},  # undecodable
        {"id": "good", "path": str(good), "text": "let"},  # decoded here
        {"input_values": np.zeros(samples, np.float32), "text": "l" * 10},  # exactly feasible: kept
        {"input_values": np.zeros(samples, np.float32), "text": "l" * 11},  # 11 labels < 19 frames, yet infeasible
        None,  # AudioDataset's undecodable file
    ]
    collator = CTCCollator(processor, frames)
    with caplog.at_level(logging.WARNING, logger="hf_wav2vec2.data"):
        batch = collator(examples)
    assert batch["labels"].shape[0] == 5
    assert dict(collator.report.dropped) == {"empty": 1, "infeasible": 2, "audio": 2}
    assert collator.report.unknown_characters == {"Z": 3}
    log = caplog.text
    assert "empty transcript" in log and "CTC-infeasible" in log and str(broken) in log
    assert log.count("'Z' is not in the vocabulary") == 1
    unk = processor.tokenizer.unk_token_id
    assert (batch["labels"] == unk).sum() == 3
    out = model(**batch)  # zero_infinity is off: a kept infeasible example would make this inf
    assert torch.isfinite(out.loss)


def no_usable_example(examples):
    return None  # what the collators return for a batch in which no example is usable


@pytest.mark.parametrize("max_tokens", [None, 16000])
def test_none_batch_becomes_a_zero_loss_placeholder(processor, tmp_path, max_tokens):
    """Through the Trainer's dataloaders and the max_tokens ones, train and eval, a collator's None becomes one
    silent utterance of the receptive field (one frame) without labels, which trains nothing and breaks nothing."""
    model = ctc_model(processor)
    data = Dataset.from_dict({"num_samples": [8000, 8000, 8000]})
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], remove_unused_columns=False,
                             per_device_train_batch_size=2, per_device_eval_batch_size=2)
    trainer = CTCTrainer(model=model, args=args, train_dataset=data, eval_dataset=data,
                         data_collator=no_usable_example, max_tokens=max_tokens)
    samples = model.config.receptive_field
    assert int(model.num_frames(samples)) == 1
    for loader in (trainer.get_train_dataloader(), trainer.get_eval_dataloader()):
        batch = next(iter(loader))
        assert torch.equal(batch["input_values"], torch.zeros(1, samples))
        assert torch.equal(batch["attention_mask"], torch.ones(1, samples, dtype=torch.long))
        assert torch.equal(batch["labels"], torch.full((1, 1), -100))
    model.train()
    loss = trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(0))
    loss.backward()
    assert loss.item() == 0.0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_loss_is_sum_over_utterances_divided_by_their_count(processor, tmp_path):
    model = ctc_model(processor, ctc_loss_reduction="sum").eval()
    batch = CTCCollator(processor, model.num_frames)([utterance(1.0, "and god said"), utterance(0.8, "let", 1)])
    trainer = CTCTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[]))
    with torch.no_grad():
        singles = [model(**{k: v[i : i + 1, : int(batch["attention_mask"][i].sum())] if k != "labels"
                            else v[i : i + 1] for k, v in batch.items()}).loss for i in range(2)]
        loss = trainer.compute_loss(model, batch)
    torch.testing.assert_close(loss, (singles[0] + singles[1]) / 2, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="ctc_loss_reduction"):
        CTCTrainer(model=ctc_model(processor, ctc_loss_reduction="mean"),
                   args=TrainingArguments(output_dir=str(tmp_path), report_to=[]))


# ---------------------------------------------------------------------------- freeze callback, tri-stage LR
class _Recorder(TrainerCallback):
    """Per update: which parameters got a gradient, the LR, and the optimizer's hyper-parameters."""

    def __init__(self):
        self.with_grad, self.lrs = [], []

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.with_grad.append({n for n, p in model.named_parameters() if p.grad is not None})
        self.lrs.append(optimizer.param_groups[0]["lr"])
        self.adam = (optimizer.param_groups[0]["betas"], optimizer.param_groups[0]["eps"])


def test_freeze_callback_and_tri_stage_lr_in_trainer(processor, tmp_path):
    torch.manual_seed(0)
    model = ctc_model(processor, freeze_finetune_updates=3, ctc_loss_reduction="sum")
    data = [utterance(0.5 + 0.1 * i, TRANSCRIPTS[i % 3], seed=i) for i in range(4)]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=10, learning_rate=1e-3, per_device_train_batch_size=2,
                             adam_beta2=0.98, adam_epsilon=1e-8, report_to=[], save_strategy="no",
                             remove_unused_columns=False, max_grad_norm=0.0, disable_tqdm=True)
    recorder = _Recorder()
    trainer = CTCTrainer(model=model, args=args, train_dataset=data, data_collator=CTCCollator(processor,
                         model.num_frames), callbacks=[recorder])
    conv_before = {n: p.detach().clone() for n, p in model.wav2vec2.feature_extractor.named_parameters()}
    trainer.train()

    every = {n for n, _ in model.named_parameters()}
    conv = {n for n in every if n.startswith("wav2vec2.feature_extractor.")}
    head = {"lm_head.weight", "lm_head.bias"}
    assert conv and len(recorder.with_grad) == 10
    for step, names in enumerate(recorder.with_grad):
        assert names == (head if step < 3 else every - conv), step
    assert all(torch.equal(p, conv_before[n]) for n, p in model.wav2vec2.feature_extractor.named_parameters())
    # the optimizer never holds the conv encoder
    held = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not held & {id(p) for p in model.wav2vec2.feature_extractor.parameters()}

    schedule = tri_stage_lr_lambda(10)
    expected = [1e-3 * schedule(step) for step in range(10)]
    assert recorder.lrs == pytest.approx(expected)
    assert expected[0] == pytest.approx(1e-5) and expected[3] == pytest.approx(1e-3)  # 0.01x start, hold
    assert recorder.adam == ((0.9, 0.98), 1e-8)


@pytest.mark.parametrize("multiple", [2, 3])
def test_batch_count_evened_for_processes_without_repeats(multiple, caplog):
    """accelerate shards batch i to process i % n and pads an uneven last round with repeats: the sampler halves
    its fullest batches until the count is a multiple of n, every epoch the same count, every utterance once."""
    lengths = [8000 + 1600 * i for i in range(7)]
    plain = MaxTokensBatchSampler(lengths, max_tokens=30000)
    assert len(plain) == 5  # 5 is no multiple of 2 or 3
    sampler = MaxTokensBatchSampler(lengths, max_tokens=30000, num_batches_multiple=multiple)
    for epoch in range(4):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) and len(sampler) % multiple == 0 and len(sampler) >= len(plain)
        assert sorted(i for batch in batches for i in batch) == list(range(7)), epoch
        assert all(len(batch) * max(lengths[i] for i in batch) <= 30000 for batch in batches)
    evaluation = MaxTokensBatchSampler(lengths, max_tokens=30000, shuffle=False, num_batches_multiple=multiple)
    assert sorted(i for batch in evaluation for i in batch) == list(range(7)) and len(evaluation) % multiple == 0
    with caplog.at_level(logging.WARNING, logger="hf_wav2vec2.data"):  # single utterances cannot be split
        alone = MaxTokensBatchSampler([100, 100, 100], max_tokens=150, num_batches_multiple=2)
    assert len(alone) == 3 and "cannot be split into a multiple of 2" in caplog.text


# ---------------------------------------------------------------------------------------------------- metrics
def test_offline_wer_cer_against_hand_computed_values():
    references = ["THE CAT SAT", "HELLO"]
    hypotheses = ["THE BAT SAT ON", "HELO"]
    # words: CAT->BAT (S), +ON (I); HELLO->HELO (S): 3 edits / 4 reference words
    assert load_metric("wer").compute(predictions=hypotheses, references=references) == pytest.approx(3 / 4)
    # characters: C->B (S), +" ON" (3 I); one L deleted (D): 5 edits / (11 + 5) reference characters
    assert load_metric("cer").compute(predictions=hypotheses, references=references) == pytest.approx(5 / 16)
    assert load_metric("wer").compute(predictions=["A B"], references=["A B"]) == 0.0


def test_summed_edit_counts_give_the_corpus_metrics():
    """Evaluation sums edit counts per batch (and process): any split of the utterances into batches gives the
    corpus WER and CER of the evaluate metrics (the oracle), and the loss per utterance."""
    from transformers import EvalPrediction

    from hf_wav2vec2.evaluation import error_rates

    references = ["THE CAT SAT", "HELLO", "A  B C", "IT'S HERE"]
    hypotheses = ["THE BAT SAT ON", "HELO", "A B", ""]
    rows = [[10.0, 2, *edit_counts(references[:2], hypotheses[:2])], [0.0, 0, *edit_counts([], [])],  # placeholder
            [6.0, 2, *edit_counts(references[2:], hypotheses[2:])]]
    metrics = summary_metrics(EvalPrediction(predictions=np.array(rows), label_ids=np.array(rows)))
    expected = error_rates(references, hypotheses)
    assert metrics["wer"] == pytest.approx(expected["wer"]) and metrics["cer"] == pytest.approx(expected["cer"])
    assert metrics["loss"] == pytest.approx(16.0 / 4)


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    synthesize_corpus(str(folder), num_speakers=2, utterances_per_split=(12, 4, 4))
    return os.path.join(folder, "LibriSpeech")


@pytest.mark.parametrize("layout", ["ours", "official"])
def test_train_ctc_end_to_end(corpus, tmp_path, layout):
    start = tmp_path / "pretrained"
    if layout == "ours":
        W2V2ForPreTraining(tiny_config()).save_pretrained(start)
    else:
        Wav2Vec2ForPreTraining(tiny_hf_config()).save_pretrained(start)
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1",
           "OMP_NUM_THREADS": "2"}
    command = [sys.executable, os.path.join(ROOT, "train_ctc.py"), "--model_name_or_path", str(start),
               "--dataset_name", corpus, "--train_split_name", "train-clean", "--eval_split_name", "dev-clean",
               "--output_dir", str(out),
               "--max_steps", "3", "--freeze_finetune_updates", "1", "--max_tokens", "160000",
               "--learning_rate", "1e-3", "--disable_tqdm", "true", "--report_to", "none"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "dev-clean: WER" in run.stdout
    for name in ("model.safetensors", "config.json", "vocab.json", "tokenizer_config.json", "processor_config.json"):
        assert (out / name).exists(), name
    results = json.loads((out / "eval_results.json").read_text())
    # the output folder is a complete Hub folder whose card carries the measured WER
    from hf_wav2vec2.hub import check_hub_folder

    assert check_hub_folder(out) == []
    card = (out / "README.md").read_text()
    wer = 100 * results["results"]["dev-clean"]["eval_wer"]
    assert f"| hf_wav2vec2 synthetic corpus (eSpeak NG) dev-clean | dev-clean | greedy | {wer:.2f} |" in card
    assert "| recipe | tiny |" in card
    losses = [entry["eval_loss"] for entry in results["log_history"] if "eval_loss" in entry]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert 0 <= results["results"]["dev-clean"]["eval_cer"] < math.inf
    model = W2V2ForCTC.from_pretrained(out)
    processor = Wav2Vec2Processor.from_pretrained(out)
    assert model.config.vocab_size == len(processor.tokenizer) and model.config.pad_token_id == 0
    assert model.config.model_type == "w2v2"
    # fine-tuning masks spans of train_ctc.py's --mask_time_length (10, the paper's), whatever pretraining used
    assert W2V2Config.from_pretrained(start).mask_time_length == 4 and model.config.mask_time_length == 10
    if layout == "ours":  # the output folder is what pipeline("automatic-speech-recognition") takes
        from transformers import pipeline

        text = pipeline("automatic-speech-recognition", model=str(out))(utterance(0.5, "")["input_values"])["text"]
        assert isinstance(text, str) and set(text) <= set(processor.tokenizer.get_vocab()) | {" ", "[", "]"}


def test_evaluation_of_a_padded_batch_equals_its_utterances_alone(processor, tmp_path):
    """The frames past an utterance's end are not read as speech: a padded batch's summary row (loss, edit counts)
    is the sum of its utterances' rows evaluated alone."""
    model = ctc_model(processor).eval()
    torch.nn.init.normal_(model.lm_head.bias, std=10.0)  # make non-blank outputs likely everywhere
    collator = CTCCollator(processor, model.num_frames)
    examples = [utterance(1.0, "and god said"), utterance(0.3, "let", 1)]
    trainer = CTCTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[]),
                         processing_class=processor)
    _, batch, _ = trainer.prediction_step(model, collator(examples), prediction_loss_only=False)
    alone = sum(trainer.prediction_step(model, collator([e]), prediction_loss_only=False)[1] for e in examples)
    assert batch.shape == (1, len(SUMMARY_FIELDS)) and batch[0, 3] == 4  # four reference words
    assert torch.equal(batch[0, 1:], alone[0, 1:]) and batch[0, 2] > 0  # counts, with errors to count
    torch.testing.assert_close(batch[0, 0], alone[0, 0], rtol=1e-5, atol=1e-4)  # the summed loss


# ------------------------------------------------------------------------------------ fp16: the gradient scaler
def _guarded_fp16_update(case: str, init_scale: float = 2.0**10, updates: int = 1, max_consecutive_skips=3):
    """accelerate gives the Trainer a GradScaler only on accelerators (on CPU, fp16=True trains in fp32 without
    one), so this follows the Trainer's update by hand with a CPU GradScaler: scaled backward; unscale_ (the
    Trainer's gradient norm goes through accelerator.clip_grad_norm_, which unscales, before
    on_pre_optimizer_step); the guard; scaler.step and update."""
    from types import SimpleNamespace

    from hf_wav2vec2.training.finetune import SkipGuard

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    guard = SkipGuard(max_consecutive_skips=max_consecutive_skips)
    guard.trainer = SimpleNamespace(accelerator=SimpleNamespace(scaler=scaler, num_processes=1),
                                    args=SimpleNamespace(device=torch.device("cpu")))
    before = [p.detach().clone() for p in model.parameters()]
    for step in range(updates):
        loss = model(torch.randn(4, 3)).pow(2).sum()
        if case == "non_finite_loss":
            loss = loss + torch.tensor(float("inf"))  # the gradients stay finite
        if case == "empty":
            loss = loss * 0.0  # a placeholder batch (PlaceholderForEmptyBatch)
        scaler.scale(loss).backward()
        if case == "overflow":
            model.weight.grad[0, 0] = float("inf")  # what an fp16 overflow in the backward leaves
        guard.record(case != "empty", loss)
        scaler.unscale_(optimizer)
        guard.on_pre_optimizer_step(SimpleNamespace(output_dir="out"), SimpleNamespace(global_step=step), None,
                                    model=model)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
    unchanged = all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    return unchanged, optimizer, scaler, guard


@pytest.mark.parametrize("case", ["overflow", "non_finite_loss", "empty", "good"])
def test_skip_guard_under_the_fp16_gradient_scaler(case):
    """A skipped update changes no weight and no Adam moment (before: a non-finite loss with finite gradients was
    left to the scaler, which stepped it), never calls unscale_ a second time, and an overflow makes the scaler
    back off; a good update steps."""
    unchanged, optimizer, scaler, guard = _guarded_fp16_update(case)
    assert unchanged == (case != "good")
    assert (len(optimizer.state) == 0) == (case != "good")  # no Adam moment for a skipped update
    assert scaler.get_scale() == (2.0**9 if case == "overflow" else 2.0**10)
    assert (guard.skipped_updates, guard.empty_updates) == {
        "overflow": (1, 0), "non_finite_loss": (1, 0), "empty": (0, 1), "good": (0, 0)}[case]


def test_fp16_overflows_stop_the_run_only_below_the_minimum_loss_scale():
    """The scaler's calibration overflows (scale 2^10 halved five times) do not stop the run; overflows at a scale
    below fairseq's min_loss_scale (1e-4) count toward max_consecutive_skips like any non-finite update."""
    from hf_wav2vec2.training.finetune import MIN_LOSS_SCALE
    from hf_wav2vec2.training.skips import TrainingStopped

    _, _, scaler, guard = _guarded_fp16_update("overflow", updates=5, max_consecutive_skips=2)
    assert scaler.get_scale() == 2.0**5 and guard.skipped_updates == 5 and guard.consecutive_skips == 0
    with pytest.raises(TrainingStopped, match="2 consecutive updates skipped"):
        _guarded_fp16_update("overflow", init_scale=MIN_LOSS_SCALE / 2, updates=2, max_consecutive_skips=2)
