"""W2V2Config: every hyper-parameter of wav2vec 2.0 (Baevski et al., 2020) in one place.

Field names follow transformers' ``Wav2Vec2Config`` so that an official ``config.json`` (model_type ``wav2vec2``)
loads unchanged; the fields transformers lacks (feature penalty, gradient scaling of the conv encoder, the Gumbel
schedule, ...) carry the paper's values. Presets: :meth:`W2V2Config.base`, :meth:`W2V2Config.large_lv60`,
:meth:`W2V2Config.tiny`.
"""

from __future__ import annotations

import functools
import operator

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

from .frames import receptive_field
from .loading import check_model_path

PRESETS = ("base", "large_lv60", "tiny")
# Every preset (and every official checkpoint) takes 16 kHz audio; the one sampling-rate constant of the package.
SAMPLING_RATE = 16000


@strict
class W2V2Config(PreTrainedConfig):
    r"""Configuration of wav2vec 2.0. Defaults are the paper's BASE model as pretrained on LibriSpeech 960 h.

    Each entry: meaning; paper symbol; fairseq name; BASE and LARGE-LV60 values (``W2V2Config.base()`` and
    ``W2V2Config.large_lv60()``; a test checks that these values equal the presets).

    **Feature encoder** (the CNN ``f: X -> Z``)

    - ``conv_dim``: output channels of each conv layer; fairseq ``conv_feature_layers``;
      BASE ``(512, 512, 512, 512, 512, 512, 512)``, LARGE ``(512, 512, 512, 512, 512, 512, 512)``.
    - ``conv_kernel``: kernel width of each layer; ``conv_feature_layers``;
      BASE ``(10, 3, 3, 3, 3, 2, 2)``, LARGE ``(10, 3, 3, 3, 3, 2, 2)`` (a 25 ms receptive field).
    - ``conv_stride``: stride of each layer; ``conv_feature_layers``;
      BASE ``(5, 2, 2, 2, 2, 2, 2)``, LARGE ``(5, 2, 2, 2, 2, 2, 2)`` (20 ms per frame).
    - ``conv_bias``: conv layers have a bias; ``conv_bias``; BASE ``False``, LARGE ``True``.
    - ``feat_extract_norm``: ``"group"`` (group norm on the first layer only) or ``"layer"`` (layer norm on every
      layer); ``extractor_mode`` default / layer_norm; BASE ``"group"``, LARGE ``"layer"``.
    - ``feat_extract_activation``: activation of the conv layers; GELU in the paper; BASE ``"gelu"``,
      LARGE ``"gelu"``.
    - ``feature_grad_mult``: scale of the gradient flowing into the conv encoder (0 freezes it);
      ``feature_grad_mult``; BASE ``0.1``, LARGE ``1.0``.

    **Feature projection and masking** (section 3.1)

    - ``feat_proj_dropout``: dropout after the projection of ``z`` to the model width; ``dropout_input``;
      BASE ``0.1``, LARGE ``0.0``.
    - ``mask_time_prob``: probability ``p`` that a frame starts a masked span; ``mask_prob``; BASE ``0.65``,
      LARGE ``0.65`` (fine-tuning: 0.075-0.65 depending on the labelled set).
    - ``mask_time_length``: span length ``M``; ``mask_length``; BASE ``10``, LARGE ``10``.
    - ``mask_time_min_masks``: at least this many spans per utterance; ``mask_min_masks``-like; BASE ``2``,
      LARGE ``2``.
    - ``require_same_masks``: in pretraining, every utterance of a batch ends with the same masked count (so
      masked frames reshape to ``(B, n, C)``); fine-tuning masks (``W2V2Model`` in training) are drawn per
      utterance without it; ``require_same_masks``; BASE ``True``, LARGE ``True``.
    - ``mask_feature_prob``: channel-mask probability, applied by ``W2V2Model`` in training (fine-tuning);
      ``mask_channel_prob``; BASE ``0.0``, LARGE ``0.0`` (fine-tuning: 0.25-0.5).
    - ``mask_feature_length``: channel span length; ``mask_channel_length``; BASE ``10``, LARGE ``10`` (fine-tuning:
      64).
    - ``mask_feature_min_masks``: at least this many channel spans; BASE ``0``, LARGE ``0``.
    - ``mask_embedding_init``: how the learned vector that replaces masked frames starts: ``"uniform"``, U[0, 1)
      in every channel (fairseq's ``mask_emb``), or ``"zeros"``; read only when weights are initialised;
      BASE ``"uniform"``, LARGE ``"uniform"``.
    - ``apply_spec_augment``: switches on the time and channel masking that ``W2V2Model`` draws by itself in
      training (fine-tuning; transformers' name). ``W2V2ForPreTraining`` always masks: the contrastive task needs
      masked frames; BASE ``True``, LARGE ``True``.

    **Context network** (Transformer ``g: Z -> C``)

    - ``hidden_size``: model width; ``encoder_embed_dim``; BASE ``768``, LARGE ``1024``.
    - ``num_hidden_layers``: blocks; ``encoder_layers``; BASE ``12``, LARGE ``24``.
    - ``num_attention_heads``: heads; ``encoder_attention_heads``; BASE ``12``, LARGE ``16``.
    - ``intermediate_size``: feed-forward width; ``encoder_ffn_embed_dim``; BASE ``3072``, LARGE ``4096``.
    - ``hidden_act``: feed-forward activation; ``activation_fn``; BASE ``"gelu"``, LARGE ``"gelu"``.
    - ``do_stable_layer_norm``: pre-LN blocks instead of post-LN; ``layer_norm_first``; BASE ``False``,
      LARGE ``True``.
    - ``num_conv_pos_embeddings``: kernel of the convolutional relative positional embedding; ``conv_pos``;
      BASE ``128``, LARGE ``128``.
    - ``num_conv_pos_embedding_groups``: its groups; ``conv_pos_groups``; BASE ``16``, LARGE ``16``.
    - ``hidden_dropout``: dropout on residual branches; ``dropout``; BASE ``0.1``, LARGE ``0.0``.
    - ``attention_dropout``: dropout on attention weights; ``attention_dropout``; BASE ``0.1``, LARGE ``0.0``.
    - ``activation_dropout``: dropout inside the feed-forward; ``activation_dropout``; BASE ``0.0``, LARGE ``0.0``.
    - ``layerdrop``: probability of skipping a block in training; ``encoder_layerdrop``; BASE ``0.05``,
      LARGE ``0.0`` (fine-tuning: 0.05-0.1).
    - ``layer_norm_eps``: epsilon of every LayerNorm and GroupNorm, conv encoder included; BASE ``1e-05``,
      LARGE ``1e-05``.
    - ``initializer_range``: std of the normal init of the Transformer's linear layers (BERT init, as fairseq);
      BASE ``0.02``, LARGE ``0.02``.

    **Quantization module** (section 2, Gumbel product quantizer)

    - ``num_codevector_groups``: ``G``; ``latent_groups``; BASE ``2``, LARGE ``2``.
    - ``num_codevectors_per_group``: ``V``; ``latent_vars``; BASE ``320``, LARGE ``320``.
    - ``codevector_dim``: width of a quantized vector (G concatenated codewords); ``latent_dim`` or ``final_dim``;
      BASE ``256``, LARGE ``768``.
    - ``feat_quantizer_dropout``: dropout on the unmasked features fed to the quantizer; ``dropout_features``;
      BASE ``0.1``, LARGE ``0.0``.
    - ``gumbel_temperature_start``: ``tau`` at update 0, annealed as ``max(start * decay**step, end)``;
      ``latent_temp[0]``; BASE ``2.0``, LARGE ``2.0``.
    - ``gumbel_temperature_end``: the floor of ``tau``; ``latent_temp[1]``; BASE ``0.5``, LARGE ``0.1``.
    - ``gumbel_temperature_decay``: factor per update; ``latent_temp[2]``; BASE ``0.999995``, LARGE ``0.999995``.

    **Objective** (section 3.2)

    - ``proj_codevector_dim``: width of the space where ``c_t`` and ``q_t`` are compared; ``final_dim``;
      BASE ``256``, LARGE ``768``.
    - ``num_negatives``: distractors ``K``; ``num_negatives``; BASE ``100``, LARGE ``100``.
    - ``contrastive_logits_temperature``: ``kappa``; ``logit_temp``; BASE ``0.1``, LARGE ``0.1``.
    - ``diversity_loss_weight``: ``alpha``; ``loss_weights[0]``; BASE ``0.1``, LARGE ``0.1``.
    - ``feature_penalty_weight``: weight of the L2 penalty on the conv features; ``loss_weights[1]``;
      BASE ``10.0``, LARGE ``0.0``.

    **CTC fine-tuning** (section 4)

    - ``vocab_size``: output tokens including the blank (the LibriSpeech letter vocabulary has 32); set from the
      tokenizer when fine-tuning; BASE ``32``, LARGE ``32``.
    - ``final_dropout``: dropout before the CTC projection; ``final_dropout``; BASE ``0.1``, LARGE ``0.1``
      (fine-tuning recipes: 0.0).
    - ``ctc_loss_reduction``: ``"sum"`` or ``"mean"`` (transformers' semantics); BASE ``"sum"``, LARGE ``"sum"``.
    - ``ctc_zero_infinity``: zero infeasible CTC losses and their gradients; ``zero_infinity``; BASE ``True``,
      LARGE ``True``.
    - ``freeze_finetune_updates``: updates during which only the CTC projection trains, read by
      ``hf_wav2vec2.training.finetune.FreezeFinetuneCallback``; ``freeze_finetune_updates``; BASE ``0``,
      LARGE ``0`` (10000 for the 10 min - 10 h sets).
    - ``pad_token_id``: id of the CTC blank, which is also the padding token; BASE ``0``, LARGE ``0``.

    **Metadata** (read by nothing in this package; kept because official ``config.json`` files carry them)

    - ``bos_token_id``, ``eos_token_id``: CTC has neither; default None, so that they cannot collide with
      vocabulary ids; BASE ``None``, LARGE ``None``.
    """

    model_type = "w2v2"

    # Feature encoder
    conv_dim: list[int] | tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_kernel: list[int] | tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: list[int] | tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    feature_grad_mult: float = 0.1
    # Feature projection and masking
    feat_proj_dropout: float = 0.1
    apply_spec_augment: bool = True
    mask_time_prob: float = 0.65
    mask_time_length: int = 10
    mask_time_min_masks: int = 2
    require_same_masks: bool = True
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 10
    mask_feature_min_masks: int = 0
    mask_embedding_init: str = "uniform"
    # Context network
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    do_stable_layer_norm: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    layerdrop: float = 0.05
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    # Quantization module
    num_codevector_groups: int = 2
    num_codevectors_per_group: int = 320
    codevector_dim: int = 256
    feat_quantizer_dropout: float = 0.1
    gumbel_temperature_start: float = 2.0
    gumbel_temperature_end: float = 0.5
    gumbel_temperature_decay: float = 0.999995
    # Objective
    proj_codevector_dim: int = 256
    num_negatives: int = 100
    contrastive_logits_temperature: float = 0.1
    diversity_loss_weight: float = 0.1
    feature_penalty_weight: float = 10.0
    # CTC fine-tuning
    vocab_size: int | None = 32
    final_dropout: float = 0.1
    ctc_loss_reduction: str = "sum"
    ctc_zero_infinity: bool = True
    freeze_finetune_updates: int = 0
    pad_token_id: int | None = 0
    # Metadata
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self, **kwargs):
        # Official configs store `torch.float32`-style dtypes and fields of heads we do not build (tdnn_*, adapters,
        # classifier); PreTrainedConfig keeps unknown keys as attributes, validate_architecture rejects the ones that
        # would change the network.
        kwargs.pop("num_feat_extract_layers", None)  # derived from conv_dim here; official configs store it
        for name in ("conv_dim", "conv_kernel", "conv_stride"):
            setattr(self, name, tuple(getattr(self, name)))
        super().__post_init__(**kwargs)
        # A loaded official config.json carries model_type "wav2vec2"; ours is the class attribute.
        self.__dict__.pop("model_type", None)
        self.validate_architecture()  # here too, so that users get a plain ValueError naming the values

    @property
    def num_feat_extract_layers(self) -> int:
        return len(self.conv_dim)

    @property
    def inputs_to_logits_ratio(self) -> int:
        """Audio samples per output frame (320 for every preset: 20 ms at 16 kHz)."""
        return functools.reduce(operator.mul, self.conv_stride, 1)

    @property
    def receptive_field(self) -> int:
        """Audio samples seen by one output frame, the shortest input that gives a frame (400 = 25 ms at 16 kHz for
        every preset)."""
        return receptive_field(self.conv_kernel, self.conv_stride)

    def validate_architecture(self):
        """Called by ``@strict`` at construction: inconsistent settings raise with the offending values."""
        lengths = {name: len(getattr(self, name)) for name in ("conv_dim", "conv_kernel", "conv_stride")}
        if len(set(lengths.values())) != 1 or not self.conv_dim:
            raise ValueError(
                f"conv_dim, conv_kernel and conv_stride must be non-empty and of one length, got {lengths}")
        for name in ("conv_dim", "conv_kernel", "conv_stride"):
            if any(int(v) < 1 for v in getattr(self, name)):
                raise ValueError(f"{name} entries must be positive integers, got {getattr(self, name)}")
        if self.mask_embedding_init not in ("uniform", "zeros"):
            raise ValueError(f"mask_embedding_init must be 'uniform' or 'zeros', got {self.mask_embedding_init!r}")
        if self.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {self.feat_extract_norm!r}")
        for name in ("feat_extract_activation", "hidden_act"):
            if getattr(self, name) not in ACT2FN:
                raise ValueError(f"{name}={getattr(self, name)!r} is not a known activation")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_conv_pos_embedding_groups "
                f"({self.num_conv_pos_embedding_groups})"
            )
        if self.codevector_dim % self.num_codevector_groups:
            raise ValueError(
                f"codevector_dim ({self.codevector_dim}) must be divisible by num_codevector_groups "
                f"({self.num_codevector_groups}): each group contributes codevector_dim / G dimensions"
            )
        for name in (
            "mask_time_prob", "mask_feature_prob", "hidden_dropout", "attention_dropout", "activation_dropout",
            "feat_proj_dropout", "feat_quantizer_dropout", "final_dropout", "layerdrop",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("mask_time_length", "mask_feature_length", "num_negatives", "num_codevectors_per_group"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.feature_grad_mult < 0:
            raise ValueError(
                f"feature_grad_mult must be >= 0 (0 freezes the conv encoder), got {self.feature_grad_mult}")
        if not 0 < self.gumbel_temperature_end <= self.gumbel_temperature_start:
            raise ValueError(
                "need 0 < gumbel_temperature_end <= gumbel_temperature_start, got "
                f"{self.gumbel_temperature_end} and {self.gumbel_temperature_start}"
            )
        if not 0 < self.gumbel_temperature_decay <= 1:
            raise ValueError(f"gumbel_temperature_decay must lie in (0, 1], got {self.gumbel_temperature_decay}")
        if self.ctc_loss_reduction not in ("sum", "mean"):
            raise ValueError(f"ctc_loss_reduction must be 'sum' or 'mean', got {self.ctc_loss_reduction!r}")
        blank, vocab = self.pad_token_id, self.vocab_size
        if vocab is not None and blank is not None and not 0 <= blank < vocab:
            raise ValueError(f"pad_token_id (the CTC blank) must lie in [0, vocab_size={self.vocab_size}), "
                             f"got {self.pad_token_id}")
        # Official configs carry fields of transformers' adapter heads; we do not build adapters.
        if getattr(self, "add_adapter", False) or getattr(self, "adapter_attn_dim", None) is not None:
            raise ValueError("adapter layers (add_adapter / adapter_attn_dim) are not supported by hf_wav2vec2")

    # ------------------------------------------------------------- interop
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> W2V2Config:
        """transformers' loader, with a missing local folder reported as such (:func:`check_model_path`)."""
        check_model_path(pretrained_model_name_or_path)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> W2V2Config:
        """Also reads transformers' ``wav2vec2`` configs: a field such a file leaves out has transformers' default
        (transformers writes only the fields that differ from its own defaults, which are not the paper's)."""
        if config_dict.get("model_type") == "wav2vec2":
            from transformers import Wav2Vec2Config

            theirs = Wav2Vec2Config().to_dict()
            ours = {f for f in cls.__dataclass_fields__ if not f.startswith("_")}
            given = {k: v for k, v in config_dict.items() if k != "model_type"}
            config_dict = {**{k: v for k, v in theirs.items() if k in ours}, **given}
            # Fields transformers lacks take the values fairseq used for the checkpoint's kind (LV-60 style
            # layer-norm encoders train the conv encoder at full gradient, without feature penalty).
            if config_dict.get("feat_extract_norm") == "layer":
                config_dict = {"feature_grad_mult": 1.0, "feature_penalty_weight": 0.0,
                               "gumbel_temperature_end": 0.1, **config_dict}
        return super().from_dict(config_dict, **kwargs)

    def to_diff_dict(self) -> dict:
        """Every field is written, so other readers (transformers' ``Wav2Vec2Config`` has other defaults) see the
        same model."""
        return self.to_dict()

    # ------------------------------------------------------------------ presets
    @classmethod
    def base(cls, **overrides) -> W2V2Config:
        """The paper's BASE: group-norm conv encoder, post-LN, 12 x 768, 12 heads, G=2, V=320, final dim 256."""
        return cls(**overrides)

    @classmethod
    def large_lv60(cls, **overrides) -> W2V2Config:
        """The paper's LARGE pretrained on Libri-Light 60k h: layer-norm conv encoder, pre-LN, 24 x 1024, 16 heads."""
        values = dict(
            conv_bias=True, feat_extract_norm="layer", feature_grad_mult=1.0, feat_proj_dropout=0.0,
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
            do_stable_layer_norm=True, hidden_dropout=0.0, attention_dropout=0.0, layerdrop=0.0,
            codevector_dim=768, proj_codevector_dim=768, feat_quantizer_dropout=0.0, gumbel_temperature_end=0.1,
            feature_penalty_weight=0.0,
        )
        return cls(**{**values, **overrides})

    @classmethod
    def tiny(cls, **overrides) -> W2V2Config:
        """Sized to pretrain on 2 CPU cores: the BASE conv geometry (20 ms frames) at 256 channels, 4 x 256 layers.

        Three pretraining settings differ from BASE, each chosen by measurement on the default corpus (README,
        "Short runs"): masked spans of 3 frames, not 10 (same ``mask_time_prob``), and a mask embedding that starts
        at zero, not U[0, 1): with the paper's values a short run sits on the chance plateau for 60-150 updates while
        the masked frames' contexts collapse onto one vector, with these it left chance by update 40 in two seeds;
        and no attention dropout (as LARGE), 15% less time per update on CPU. Fine-tuning sets its own span length
        and dropouts (``train_ctc.py``: ``--mask_time_length`` 10 as in the paper's recipes)."""
        values = dict(
            conv_dim=(256,) * 7, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
            num_codevectors_per_group=64, codevector_dim=128, proj_codevector_dim=128, num_conv_pos_embeddings=64,
            layerdrop=0.0, attention_dropout=0.0, mask_time_length=3, mask_embedding_init="zeros",
        )
        return cls(**{**values, **overrides})

    @classmethod
    def from_preset(cls, name: str, **overrides) -> W2V2Config:
        """``"base"``, ``"large_lv60"`` or ``"tiny"``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {PRESETS}")
        return getattr(cls, name)(**overrides)
