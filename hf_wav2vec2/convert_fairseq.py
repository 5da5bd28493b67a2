"""fairseq wav2vec 2.0 checkpoints in: a pretraining ``Wav2Vec2Model`` or a fine-tuned ``Wav2VecCtc`` ``.pt`` file
becomes a model folder of this package (config.json, model.safetensors, modeling code, processor).

    python -m hf_wav2vec2.convert_fairseq --checkpoint wav2vec_small.pt --output_dir runs/wav2vec_small
    python -m hf_wav2vec2.convert_fairseq --checkpoint wav2vec_small_960h.pt --dict dict.ltr.txt \\
        --output_dir runs/wav2vec_small_960h

fairseq itself is not needed. The checkpoint is read with ``torch.load(weights_only=True)``, which allows tensors,
containers and ``argparse.Namespace`` (the legacy ``args``) but no other pickled object; a checkpoint whose config is
a pickled omegaconf object is refused unless ``--trust_pickle`` says that the file is trusted.

Both config layouts are read: the ``cfg`` dict of fairseq >= 0.10 (``cfg["model"]``, ``cfg["task"]``,
``cfg["criterion"]``) and the legacy ``args`` Namespace. Conv encoders with group norm (BASE) or layer norm (LARGE,
LV-60, XLS-R), post-LN or pre-LN (``layer_norm_first``), with or without conv bias, ``latent_dim`` and ``final_dim``
are supported; architectures this package does not build (conformer layers, deeper positional convs, ``quantize_input``,
``target_glu``, deeper quantizer projections, shared codebooks) are refused with the field's name.

Vocabulary: fairseq's ``Dictionary`` puts ``<s>, <pad>, </s>, <unk>`` in front of the symbols of ``dict.ltr.txt``,
and its CTC blank is ``<s>`` = id 0 (``audio_finetuning``'s ``blank_symbol``; ``Wav2VecCtc`` treats index 0 as the
blank). Here the blank is the pad token, id 0: the ids stay where they are and ids 0 and 1 swap names
(``<pad>`` = 0 = blank, ``<s>`` = 1), as in the official transformers conversions, so greedy decoding gives
fairseq's letters.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import pickle
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2Processor

from .configuration import W2V2Config
from .data.ctc import build_feature_extractor
from .modeling import W2V2ForCTC, W2V2ForPreTraining

# fairseq's Wav2Vec2Config defaults (fairseq/models/wav2vec/wav2vec2.py), for fields an older checkpoint lacks.
FAIRSEQ_DEFAULTS = dict(
    extractor_mode="default", encoder_layers=12, encoder_embed_dim=768, encoder_ffn_embed_dim=3072,
    encoder_attention_heads=12, activation_fn="gelu", layer_type="transformer", dropout=0.1, attention_dropout=0.1,
    activation_dropout=0.0, encoder_layerdrop=0.0, dropout_input=0.0, dropout_features=0.0, final_dim=0,
    layer_norm_first=False, conv_feature_layers="[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]",
    conv_bias=False, logit_temp=0.1, quantize_targets=False, quantize_input=False, same_quantizer=False,
    target_glu=False, feature_grad_mult=1.0, quantizer_depth=1, quantizer_factor=3, latent_vars=320,
    latent_groups=2, latent_dim=0, mask_length=10, mask_prob=0.65, require_same_masks=True, mask_channel_prob=0.0,
    mask_channel_length=10, num_negatives=100, conv_pos=128, conv_pos_groups=16, pos_conv_depth=1,
    conv_pos_batch_norm=False, latent_temp=(2.0, 0.5, 0.999995), crop_seq_to_multiple=1,
)
# fairseq Wav2Vec2AsrConfig defaults (wav2vec2_asr.py): the fine-tuning overrides of a Wav2VecCtc checkpoint.
FAIRSEQ_CTC_DEFAULTS = dict(
    final_dropout=0.0, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, dropout_input=0.0,
    apply_mask=False, mask_length=10, mask_prob=0.5, mask_channel_prob=0.0, mask_channel_length=64, layerdrop=0.0,
    feature_grad_mult=0.0, freeze_finetune_updates=0, blank_weight=0.0, blank_mode="add",
)
# fairseq activation names -> transformers' ACT2FN names (gelu_accurate is the tanh approximation).
ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_accurate": "gelu_new", "gelu_fast": "gelu_new",
               "tanh": "tanh", "linear": "linear", "swish": "swish"}
# fairseq special symbols in Dictionary order; fairseq's blank (<s>, id 0) becomes our <pad> (blank = pad = 0).
FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
OUR_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
# Fine-tuned checkpoints sometimes keep pretraining-only modules; a CTC model has no use for them.
PRETRAINING_ONLY = ("quantizer.", "project_q.", "final_proj.", "target_glu.", "project_inp.", "input_quantizer.")


# --------------------------------------------------------------------------------------------- 1. checkpoint
def load_checkpoint(path: str | os.PathLike, trust_pickle: bool = False) -> dict:
    """The checkpoint dict (``model`` state dict plus ``cfg`` or ``args``), loaded without running pickled code
    unless ``trust_pickle``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"fairseq checkpoint {path} does not exist")
    try:
        if trust_pickle:
            state = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):
                state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        what = found.group(1) if found else str(error).splitlines()[0][:200]
        raise ValueError(
            f"{path}: torch.load(weights_only=True) refused an object in this checkpoint ({what}). "
            "Checkpoints whose config is a pickled omegaconf object need omegaconf installed and --trust_pickle "
            "(which runs the file's pickled code: only for files from a source you trust).") from error
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {error}") from error
    if not isinstance(state, Mapping) or not isinstance(state.get("model"), Mapping):
        keys = sorted(state)[:10] if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"{path} is not a fairseq checkpoint: expected a dict with a 'model' state dict, got {keys}")
    return dict(state)


def _plain(value):
    """Namespace / omegaconf / Mapping -> nested plain dicts."""
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf  # only reached for --trust_pickle checkpoints, which need omegaconf

        value = OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _literal(value, field: str, path: str):
    """fairseq stores some lists as Python literals in strings (``"[(512, 10, 5)] + [(512, 3, 2)] * 4"``,
    ``"(2,0.5,0.999995)"``): evaluate literals, ``+`` and ``*`` only, never arbitrary code."""
    if not isinstance(value, str):
        return value

    def evaluate(node):
        if isinstance(node, ast.Expression):
            return evaluate(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -evaluate(node.operand)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [evaluate(e) for e in node.elts]
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = evaluate(node.left), evaluate(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(ast.dump(node))

    try:
        return evaluate(ast.parse(value, mode="eval"))
    except (SyntaxError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: cannot read {field}={value!r} (expected a list literal): {error}") from error


# ------------------------------------------------------------------------------------------------- 2. config
def read_fairseq_config(state: Mapping, path: str = "checkpoint") -> dict:
    """The parts of a checkpoint's config that matter: ``kind`` ("pretraining" or "ctc"), ``model`` (the wav2vec 2.0
    model fields, defaults filled in), ``ctc`` (the fine-tuning fields, for "ctc"), ``normalize`` (the task's
    per-utterance audio normalisation) and ``loss_weights`` (or None)."""
    cfg = _plain(state.get("cfg"))
    args = _plain(state.get("args"))
    if cfg and cfg.get("model"):
        model, task, criterion = dict(cfg["model"]), dict(cfg.get("task") or {}), dict(cfg.get("criterion") or {})
        name = model.get("_name")
    elif args:
        model, task, criterion = dict(args), dict(args), dict(args)
        name = args.get("arch")
    else:
        raise ValueError(f"{path} has neither a 'cfg' nor an 'args' entry: the model's configuration is unknown")
    weights = state["model"]
    is_ctc = name in ("wav2vec_ctc", "wav2vec2_ctc") or any(k.startswith("w2v_encoder.") for k in weights)
    if not is_ctc and name not in (None, "wav2vec2"):
        raise ValueError(f"{path}: model {name!r} is not supported (expected a wav2vec2 pretraining model or a "
                         "wav2vec_ctc fine-tuned model)")
    result = {"kind": "ctc" if is_ctc else "pretraining", "normalize": bool(task.get("normalize", False)),
              "loss_weights": None, "ctc": None}
    if is_ctc:
        w2v = _plain(model.get("w2v_args"))
        if not w2v:
            raise ValueError(f"{path}: the fine-tuned model's config has no w2v_args (the pretraining model's "
                             "config, which fairseq stores in fine-tuned checkpoints)")
        w2v_model = dict(w2v["model"]) if isinstance(w2v.get("model"), Mapping) else dict(w2v)
        w2v_task = dict(w2v["task"]) if isinstance(w2v.get("task"), Mapping) else dict(w2v)
        result["ctc"] = {**FAIRSEQ_CTC_DEFAULTS, **{k: v for k, v in model.items() if k in FAIRSEQ_CTC_DEFAULTS}}
        result["normalize"] = bool(task.get("normalize", w2v_task.get("normalize", False)))
        model = w2v_model
    else:
        weights_field = criterion.get("loss_weights")
        if weights_field is not None:
            result["loss_weights"] = [float(w) for w in _literal(weights_field, "loss_weights", path)]
    result["model"] = {**FAIRSEQ_DEFAULTS, **{k: v for k, v in model.items() if k in FAIRSEQ_DEFAULTS}}
    return result


def w2v2_config_from_fairseq(fairseq: Mapping, vocab_size: int | None = None, path: str = "checkpoint") -> W2V2Config:
    """W2V2Config of a checkpoint read by :func:`read_fairseq_config`; refuses what this package does not build."""
    m = fairseq["model"]
    unsupported = {
        "layer_type": (m["layer_type"], "transformer"), "pos_conv_depth": (m["pos_conv_depth"], 1),
        "conv_pos_batch_norm": (m["conv_pos_batch_norm"], False), "quantize_input": (m["quantize_input"], False),
        "target_glu": (m["target_glu"], False), "quantizer_depth": (m["quantizer_depth"], 1),
        "crop_seq_to_multiple": (m["crop_seq_to_multiple"], 1),
    }
    if fairseq["kind"] == "pretraining":
        unsupported["quantize_targets"] = (m["quantize_targets"], True)
    for field, (value, wanted) in unsupported.items():
        if value != wanted:
            raise ValueError(f"{path}: {field}={value!r} is not supported by hf_wav2vec2 (it builds {field}="
                             f"{wanted!r} only)")
    if m["activation_fn"] not in ACTIVATIONS:
        raise ValueError(f"{path}: activation_fn={m['activation_fn']!r} is not supported; expected one of "
                         f"{sorted(ACTIVATIONS)}")
    if m["extractor_mode"] not in ("default", "layer_norm"):
        raise ValueError(f"{path}: extractor_mode={m['extractor_mode']!r}; expected 'default' or 'layer_norm'")
    conv = _literal(m["conv_feature_layers"], "conv_feature_layers", path)
    if not conv or any(len(layer) != 3 for layer in conv):
        raise ValueError(f"{path}: conv_feature_layers must list (dim, kernel, stride) triples, got {conv}")
    temp = [float(t) for t in _literal(m["latent_temp"], "latent_temp", path)]
    final_dim = m["final_dim"] if m["final_dim"] > 0 else m["encoder_embed_dim"]
    values = dict(
        conv_dim=[c[0] for c in conv], conv_kernel=[c[1] for c in conv], conv_stride=[c[2] for c in conv],
        conv_bias=bool(m["conv_bias"]), feat_extract_norm="group" if m["extractor_mode"] == "default" else "layer",
        feat_extract_activation="gelu", feature_grad_mult=float(m["feature_grad_mult"]),
        feat_proj_dropout=float(m["dropout_input"]), mask_time_prob=float(m["mask_prob"]),
        mask_time_length=int(m["mask_length"]), require_same_masks=bool(m["require_same_masks"]),
        mask_feature_prob=float(m["mask_channel_prob"]), mask_feature_length=int(m["mask_channel_length"]),
        hidden_size=int(m["encoder_embed_dim"]), num_hidden_layers=int(m["encoder_layers"]),
        num_attention_heads=int(m["encoder_attention_heads"]), intermediate_size=int(m["encoder_ffn_embed_dim"]),
        hidden_act=ACTIVATIONS[m["activation_fn"]], do_stable_layer_norm=bool(m["layer_norm_first"]),
        num_conv_pos_embeddings=int(m["conv_pos"]), num_conv_pos_embedding_groups=int(m["conv_pos_groups"]),
        hidden_dropout=float(m["dropout"]), attention_dropout=float(m["attention_dropout"]),
        activation_dropout=float(m["activation_dropout"]), layerdrop=float(m["encoder_layerdrop"]),
        num_codevector_groups=int(m["latent_groups"]), num_codevectors_per_group=int(m["latent_vars"]),
        codevector_dim=int(m["latent_dim"] if m["latent_dim"] > 0 else final_dim),
        feat_quantizer_dropout=float(m["dropout_features"]), gumbel_temperature_start=temp[0],
        gumbel_temperature_end=temp[1], gumbel_temperature_decay=temp[2], proj_codevector_dim=int(final_dim),
        num_negatives=int(m["num_negatives"]), contrastive_logits_temperature=float(m["logit_temp"]),
        vocab_size=vocab_size, pad_token_id=0,
    )
    if fairseq["loss_weights"] is not None:
        weights = list(fairseq["loss_weights"]) + [0.0] * (2 - len(fairseq["loss_weights"]))
        values.update(diversity_loss_weight=weights[0], feature_penalty_weight=weights[1])
    ctc = fairseq["ctc"]
    if ctc is not None:
        # Wav2VecEncoder overrides these pretraining fields with the fine-tuning ones (fairseq's arg_overrides).
        values.update(
            hidden_dropout=float(ctc["dropout"]), attention_dropout=float(ctc["attention_dropout"]),
            activation_dropout=float(ctc["activation_dropout"]), feat_proj_dropout=float(ctc["dropout_input"]),
            apply_spec_augment=bool(ctc["apply_mask"]),
            mask_time_prob=float(ctc["mask_prob"]) if ctc["apply_mask"] else 0.0,
            mask_time_length=int(ctc["mask_length"]),
            mask_feature_prob=float(ctc["mask_channel_prob"]) if ctc["apply_mask"] else 0.0,
            mask_feature_length=int(ctc["mask_channel_length"]), layerdrop=float(ctc["layerdrop"]),
            feature_grad_mult=float(ctc["feature_grad_mult"]), final_dropout=float(ctc["final_dropout"]),
            freeze_finetune_updates=int(ctc["freeze_finetune_updates"]),
        )
        if ctc["blank_mode"] != "add" and float(ctc["blank_weight"]) != 0:
            raise ValueError(f"{path}: blank_mode={ctc['blank_mode']!r} with blank_weight={ctc['blank_weight']} "
                             "is not supported (only 'add', which is folded into the blank's bias)")
    try:
        return W2V2Config(**values)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: the checkpoint's configuration does not make a valid W2V2Config: {error}") from error


# -------------------------------------------------------------------------------------------------- 3. weights
def _rename(key: str) -> str | None:
    """One fairseq Wav2Vec2Model key -> our W2V2ForPreTraining key (None: no counterpart)."""
    rules = (
        (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)",
         r"wav2vec2.feature_extractor.conv_layers.\1.conv.\2"),
        (r"feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)",  # group norm (layer 0, BASE)
         r"wav2vec2.feature_extractor.conv_layers.\1.layer_norm.\2"),
        (r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)",  # layer norm between transposes (LARGE)
         r"wav2vec2.feature_extractor.conv_layers.\1.layer_norm.\2"),
        (r"layer_norm\.(weight|bias)", r"wav2vec2.feature_projection.layer_norm.\1"),
        (r"post_extract_proj\.(weight|bias)", r"wav2vec2.feature_projection.projection.\1"),
        (r"mask_emb", "wav2vec2.masked_spec_embed"),
        (r"encoder\.pos_conv\.0\.(?:weight_g|parametrizations\.weight\.original0)",
         "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
        (r"encoder\.pos_conv\.0\.(?:weight_v|parametrizations\.weight\.original1)",
         "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
        (r"encoder\.pos_conv\.0\.bias", "wav2vec2.encoder.pos_conv_embed.conv.bias"),
        (r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)",
         r"wav2vec2.encoder.layers.\1.attention.\2_proj.\3"),
        (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"wav2vec2.encoder.layers.\1.layer_norm.\2"),
        (r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)",
         r"wav2vec2.encoder.layers.\1.feed_forward.intermediate_dense.\2"),
        (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)", r"wav2vec2.encoder.layers.\1.feed_forward.output_dense.\2"),
        (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"wav2vec2.encoder.layers.\1.final_layer_norm.\2"),
        (r"encoder\.layer_norm\.(weight|bias)", r"wav2vec2.encoder.layer_norm.\1"),
        (r"quantizer\.vars", "quantizer.codevectors"),
        (r"quantizer\.weight_proj\.(weight|bias)", r"quantizer.weight_proj.\1"),
        (r"project_q\.(weight|bias)", r"project_q.\1"),
        (r"final_proj\.(weight|bias)", r"project_hid.\1"),
    )
    for pattern, replacement in rules:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def convert_state_dict(weights: Mapping[str, torch.Tensor], model: torch.nn.Module, fairseq: Mapping,
                       path: str = "checkpoint") -> dict[str, torch.Tensor]:
    """fairseq state dict -> ``model``'s state dict, every one of its tensors accounted for (else ValueError)."""
    ours = model.state_dict()
    converted, unused = {}, []
    for key, tensor in weights.items():
        if fairseq["kind"] == "ctc":
            if key.startswith("w2v_encoder.proj."):
                converted[key.replace("w2v_encoder.proj.", "lm_head.")] = tensor
                continue
            if not key.startswith("w2v_encoder.w2v_model."):
                unused.append(key)
                continue
            key = key[len("w2v_encoder.w2v_model."):]
            if key.startswith(PRETRAINING_ONLY):
                continue
        name = _rename(key)
        if name is None:
            unused.append(key)
        elif name in ours:
            converted[name] = tensor
        elif name != "wav2vec2.masked_spec_embed":  # our model has none when its config never masks
            unused.append(key)
    if "wav2vec2.feature_projection.projection.weight" in ours and "post_extract_proj.weight" not in weights \
            and "w2v_encoder.w2v_model.post_extract_proj.weight" not in weights:
        # fairseq has no projection when the conv width equals the model width: the identity is exact.
        width = model.config.hidden_size
        converted["wav2vec2.feature_projection.projection.weight"] = torch.eye(width)
        converted["wav2vec2.feature_projection.projection.bias"] = torch.zeros(width)
    ctc = fairseq["ctc"]
    if ctc is not None and float(ctc["blank_weight"]) != 0 and "lm_head.bias" in converted:
        # Wav2VecCtc.get_logits adds blank_weight to the blank's logit (blank_mode "add"): the same as its bias.
        converted["lm_head.bias"] = converted["lm_head.bias"].clone()
        converted["lm_head.bias"][0] += float(ctc["blank_weight"])
    missing = sorted(set(ours) - set(converted))
    wrong = sorted(k for k in converted if k in ours and converted[k].shape != ours[k].shape)
    if unused or missing or wrong:
        shapes = [f"{k} {tuple(converted[k].shape)} vs {tuple(ours[k].shape)}" for k in wrong[:5]]
        raise ValueError(f"{path}: the weights do not match the configuration: unused {unused[:8]}, missing "
                         f"{missing[:8]}, shapes differ {shapes}")
    return {k: v.to(ours[k].dtype) for k, v in converted.items()}


# ---------------------------------------------------------------------------------------------- 4. vocabulary
def read_fairseq_dictionary(path: str | os.PathLike) -> list[str]:
    """The symbols of a fairseq ``dict.*.txt`` (``symbol count`` per line), in id order after the four specials."""
    symbols = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = line.rstrip()
        if not line:
            continue
        fields = line.rsplit(" ", 1)
        if fields[-1] == "#fairseq:overwrite":
            fields = fields[0].rsplit(" ", 1)
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise ValueError(f"{path} line {number}: expected '<symbol> <count>', got {line!r}")
        if fields[0] in symbols or fields[0] in FAIRSEQ_SPECIALS:
            raise ValueError(f"{path} line {number}: symbol {fields[0]!r} appears twice")
        symbols.append(fields[0])
    return symbols


def fairseq_processor(normalize: bool, symbols: list[str] | None, vocab_dir: Path):
    """Feature extractor (with fairseq's per-utterance normalisation when the task had it) and, given the
    dictionary's symbols, a CTC tokenizer with fairseq's ids (blank = ``<pad>`` = 0)."""
    extractor = build_feature_extractor(normalize)
    if symbols is None:
        return extractor
    vocab = {token: i for i, token in enumerate([*OUR_SPECIALS, *symbols])}
    vocab_dir.mkdir(parents=True, exist_ok=True)
    (vocab_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab_dir / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                     bos_token="<s>", eos_token="</s>",
                                     word_delimiter_token="|" if "|" in vocab else None)
    return Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)


# ------------------------------------------------------------------------------------------------ 5. convert
def convert_fairseq_checkpoint(checkpoint: str | os.PathLike, output_dir: str | os.PathLike,
                               dict_path: str | os.PathLike | None = None, trust_pickle: bool = False):
    """Convert ``checkpoint`` and write the folder ``output_dir`` (``hub.save_hub_folder``: weights, config with
    auto_map, code, processor). Returns the converted model (eval mode)."""
    from .hub import save_hub_folder

    path = os.fspath(checkpoint)
    state = load_checkpoint(path, trust_pickle)
    fairseq = read_fairseq_config(state, path)
    weights = state["model"]
    symbols = read_fairseq_dictionary(dict_path) if dict_path is not None else None
    if fairseq["kind"] == "ctc":
        proj = weights.get("w2v_encoder.proj.weight")
        if proj is None:
            raise ValueError(f"{path}: a fine-tuned checkpoint without w2v_encoder.proj (the CTC projection)")
        vocab_size = int(proj.shape[0])
        if symbols is not None and len(symbols) + len(FAIRSEQ_SPECIALS) != vocab_size:
            raise ValueError(f"{dict_path} gives {len(symbols)} symbols + 4 specials = "
                             f"{len(symbols) + len(FAIRSEQ_SPECIALS)} tokens, but {path} has {vocab_size} outputs")
        config = w2v2_config_from_fairseq(fairseq, vocab_size, path)
        model = W2V2ForCTC(config)
    else:
        config = w2v2_config_from_fairseq(fairseq, None, path)
        model = W2V2ForPreTraining(config)
        symbols = None  # a pretraining model has no vocabulary
    model.load_state_dict(convert_state_dict(weights, model, fairseq, path), strict=True)
    model.eval()
    output_dir = Path(output_dir)
    processor = fairseq_processor(fairseq["normalize"], symbols, output_dir)
    save_hub_folder(model, processor, output_dir)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hf_wav2vec2.convert_fairseq", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="fairseq .pt file (Wav2Vec2Model or Wav2VecCtc)")
    parser.add_argument("--output_dir", required=True, help="folder to write (config.json, model.safetensors, ...)")
    parser.add_argument("--dict", default=None, help="fairseq dict.ltr.txt of a fine-tuned checkpoint: becomes the "
                        "tokenizer (without it, only the feature extractor is written)")
    parser.add_argument("--trust_pickle", action="store_true", help="load with torch.load(weights_only=False), "
                        "which runs code pickled in the file: only for checkpoints from a source you trust")
    args = parser.parse_args(argv)
    model = convert_fairseq_checkpoint(args.checkpoint, args.output_dir, args.dict, args.trust_pickle)
    kind = type(model).__name__
    print(f"wrote {args.output_dir}: {kind}, {sum(p.numel() for p in model.parameters()):,} parameters"
          + ("" if args.dict or kind != "W2V2ForCTC" else "; no --dict, so no tokenizer"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
