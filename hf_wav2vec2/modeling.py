"""wav2vec 2.0 models: the shared base (:class:`W2V2Model`), self-supervised pretraining
(:class:`W2V2ForPreTraining`) and CTC fine-tuning (:class:`W2V2ForCTC`).

Parameter names and shapes are those of the official Hugging Face checkpoints, so their folders load directly.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

# Saved folders carry this file and, recursively, the files it imports as ``from .x import``: transformers' remote-code
# saving (custom_object_save) follows only relative imports of sibling files. So every module the model needs is a
# sibling of this one (no subpackages) and imports only the standard library, torch, transformers and huggingface_hub
# (hub.check_code_imports enforces that when a folder is written).
from .configuration import W2V2Config
from .feature_encoder import ConvLayer, FeatureEncoder, FeatureProjection
from .frames import frame_mask, num_frames
from .kernels_dropout import Dropout
from .loading import check_loaded_weights, check_model_path, safetensors_problem, weight_files
from .losses import (
    contrastive_logits,
    contrastive_loss,
    ctc_loss,
    diversity_loss,
    feature_penalty,
    pretraining_loss,
)
from .masking import compute_channel_mask, compute_span_mask, sample_negatives
from .outputs import W2V2BaseModelOutput, W2V2CTCOutput, W2V2ForPreTrainingOutput
from .quantizer import GumbelQuantizer
from .transformer import Encoder, PositionalConvEmbedding


# -------------------------------------------------------------------------------------------------- base class
class W2V2PreTrainedModel(PreTrainedModel):
    config_class = W2V2Config
    base_model_prefix = "wav2vec2"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' loader plus what it leaves to warnings or to silence:

        1. a missing local folder is reported as missing, not as a Hub problem (``check_model_path``);
        2. a damaged safetensors file is named in the error;
        3. weights that do not fit the model (a base-model parameter missing or of the wrong shape, e.g. a fairseq
           state dict or another architecture) raise instead of leaving a randomly initialised encoder; only the
           heads (``lm_head``, quantizer, ``project_q``, ``project_hid``) and ``masked_spec_embed`` may be missing;
        4. NaN or infinite weights after loading raise, naming the file.
        """
        check_model_path(pretrained_model_name_or_path)
        want_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *model_args,
                                                  output_loading_info=True, **kwargs)
        except Exception as error:
            # safetensors' own error names no file (this code may run where safetensors is not importable by name)
            if type(error).__name__ != "SafetensorError":
                raise
            files = weight_files(pretrained_model_name_or_path, kwargs.get("subfolder", ""))
            damaged = [f for f in files if safetensors_problem(f)] or files or [str(pretrained_model_name_or_path)]
            raise OSError(f"damaged safetensors file {', '.join(damaged)}: {error}") from error
        source = ", ".join(weight_files(pretrained_model_name_or_path, kwargs.get("subfolder", ""))) \
            or str(pretrained_model_name_or_path)
        check_loaded_weights(model, info, source)
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' ``save_pretrained`` (weights, config and, for our registered classes, the modeling code).
        The one writer of ``auto_map``: AutoConfig, AutoModel and this head's Auto class, so that any Auto class a
        user reaches for loads the folder's code (transformers itself maps only the config's and the saved class's).
        """
        if self._auto_class is not None:
            module = type(self).__module__.rsplit(".", 1)[-1]
            config_module = type(self.config).__module__.rsplit(".", 1)[-1]
            self.config.auto_map = {"AutoConfig": f"{config_module}.{type(self.config).__name__}",
                                    "AutoModel": f"{module}.W2V2Model",
                                    self._auto_class: f"{module}.{type(self).__name__}"}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _initialize_weights(self, module: nn.Module, is_custom_code: bool = False):
        # transformers skips container modules without direct parameters (ConvLayer, FeatureProjection, ...) for
        # code outside its tree; every init below goes through its guarded functions, so that guard is not needed.
        super()._initialize_weights(module, is_custom_code=False)

    def _init_weights(self, module: nn.Module):
        """fairseq's initialisation, the one place where weights are set. Modules are visited children first, so a
        container's rule (e.g. the CTC head) overrides the generic Linear rule below."""
        if isinstance(module, GumbelQuantizer):
            # Gumbel logits start at unit scale so every entry is reachable; codewords uniform in [0, 1).
            init.normal_(module.weight_proj.weight, mean=0.0, std=1.0)
            init.zeros_(module.weight_proj.bias)
            init.uniform_(module.codevectors)
        elif isinstance(module, PositionalConvEmbedding):
            # std = sqrt(4 / (kernel * channels)) on the direction v; the magnitude g starts at |v| so w = v.
            conv = module.conv
            v = conv.parametrizations.weight.original1
            init.normal_(v, mean=0.0, std=math.sqrt(4.0 / (conv.kernel_size[0] * conv.in_channels)))
            init.copy_(conv.parametrizations.weight.original0, torch.linalg.vector_norm(v, dim=(0, 1), keepdim=True))
            init.zeros_(conv.bias)
        elif isinstance(module, ConvLayer):
            init.kaiming_normal_(module.conv.weight)
            if module.conv.bias is not None:
                bound = math.sqrt(1.0 / (module.conv.in_channels * module.conv.kernel_size[0]))
                init.uniform_(module.conv.bias, a=-bound, b=bound)
        elif isinstance(module, FeatureProjection):
            # PyTorch's default Linear init, as fairseq's post_extract_proj.
            bound = 1.0 / math.sqrt(module.projection.in_features)
            init.uniform_(module.projection.weight, a=-bound, b=bound)
            init.uniform_(module.projection.bias, a=-bound, b=bound)
        elif isinstance(module, W2V2ForPreTraining):
            # The two final projections keep PyTorch's default Linear init, as fairseq.
            for linear in (module.project_hid, module.project_q):
                bound = 1.0 / math.sqrt(linear.in_features)
                init.uniform_(linear.weight, a=-bound, b=bound)
                init.uniform_(linear.bias, a=-bound, b=bound)
        elif isinstance(module, W2V2Model) and module.masked_spec_embed is not None:
            if self.config.mask_embedding_init == "zeros":
                init.zeros_(module.masked_spec_embed)
            else:
                init.uniform_(module.masked_spec_embed)
        elif isinstance(module, W2V2ForCTC):
            # fairseq's Linear(): Xavier-uniform weight, zero bias.
            init.xavier_uniform_(module.lm_head.weight)
            init.zeros_(module.lm_head.bias)
        elif isinstance(module, nn.Linear):
            # Transformer blocks: BERT init (normal, std initializer_range), fairseq init_bert_params.
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    def num_frames(self, num_samples: int | torch.Tensor):
        """Frames the model outputs for ``num_samples`` audio samples (the feature encoder's arithmetic)."""
        return num_frames(num_samples, self.config.conv_kernel, self.config.conv_stride)

    def freeze_feature_encoder(self):
        """Stop training the conv encoder (fine-tuning recipe)."""
        for p in self._base().feature_extractor.parameters():
            p.requires_grad = False

    def compile_stages(self, **compile_kwargs):
        """``torch.compile`` the stages that trace as whole graphs, in place; returns the model.

        Compiled (each with ``nn.Module.compile(**compile_kwargs)``, e.g. ``backend="inductor"``, ``mode=...``,
        ``dynamic=...``): the feature encoder, the feature projection, the positional conv embedding and every
        Transformer block. None of them has a graph break, in training (gradients, dropout, padding) or not.
        Left eager, around them: input checks, mask and negative sampling, the LayerDrop draw and loop (a skipped
        block must leave its parameters without gradient, as in eager; one graph for the whole loop would need one
        compilation per skip pattern), the quantizer's Gumbel sampling, the masked-frames-first reordering and the
        losses.

        ``nn.Module.compile`` keeps the modules where they are, so ``state_dict`` keys, ``save_pretrained`` and
        checkpoints are unchanged (no ``_orig_mod.`` prefix). Call it once, before ``accelerator.prepare`` or the
        Trainer; compilation happens on the first forward pass of each stage (and again when input shapes change,
        after which dynamo marks the changing dimensions dynamic).
        """
        base = self._base()
        encoder = base.encoder
        for module in (base.feature_extractor, base.feature_projection, encoder.pos_conv_embed, *encoder.layers):
            module.compile(**compile_kwargs)
        return self

    def _base(self) -> W2V2Model:
        return self if isinstance(self, W2V2Model) else self.wav2vec2


# ------------------------------------------------------------------------------------------------------- model
class W2V2Model(W2V2PreTrainedModel):
    """Feature encoder, projection, time/channel masking and context network: raw audio -> ``c`` (B, T, H)."""

    def __init__(self, config: W2V2Config):
        super().__init__(config)
        self.feature_extractor = FeatureEncoder(config)
        self.feature_projection = FeatureProjection(config.conv_dim[-1], config.hidden_size, config.layer_norm_eps,
                                                    config.feat_proj_dropout)
        # Official checkpoints carry the learned mask vector only when some masking is configured.
        self.masked_spec_embed = None
        if config.mask_time_prob > 0.0 or config.mask_feature_prob > 0.0:
            self.masked_spec_embed = nn.Parameter(torch.empty(config.hidden_size))
        self.encoder = Encoder(config)
        self.post_init()

    def _check_inputs(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """Clear errors instead of silent garbage; returns (B,) real sample counts or None."""
        if not isinstance(input_values, torch.Tensor) or input_values.dim() != 2:
            shape = tuple(input_values.shape) if isinstance(input_values, torch.Tensor) else type(input_values)
            raise ValueError(f"input_values must be a (batch, samples) tensor of raw 16 kHz audio, got {shape}")
        if not input_values.is_floating_point():
            raise TypeError(f"input_values must be floating point audio, got dtype {input_values.dtype}")
        rf = self.config.receptive_field
        if input_values.shape[1] < rf:
            raise ValueError(f"input_values has {input_values.shape[1]} samples, fewer than the receptive field of "
                             f"{rf} samples ({rf / 16:.0f} ms at 16 kHz): no frame can be computed")
        sample_lengths = None
        if attention_mask is not None:
            if attention_mask.shape != input_values.shape:
                raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} differs from input_values "
                                 f"shape {tuple(input_values.shape)}")
            sample_lengths = attention_mask.long().sum(-1)
        if not torch.compiler.is_compiling():
            if not torch.isfinite(input_values).all():
                raise ValueError("input_values contains NaN or infinite samples")
            if sample_lengths is not None and (sample_lengths < rf).any():
                short = [(i, int(n)) for i, n in enumerate(sample_lengths.tolist()) if n < rf]
                raise ValueError(f"batch items (index, samples) {short} are shorter than the receptive field of "
                                 f"{rf} samples")
            if sample_lengths is not None and bool((sample_lengths == input_values.shape[1]).all()):
                sample_lengths = None  # nothing padded: take the unmasked fast paths
        return sample_lengths

    def sample_time_mask(self, frame_lengths: torch.Tensor, max_frames: int, generator: torch.Generator | None = None,
                         require_same_masks: bool = False) -> torch.Tensor:
        """(B, max_frames) bool time mask with the config's ``p``, ``M`` and minimum span count, for (B,) real frame
        counts: the one place both fine-tuning (here, per utterance) and pretraining (``W2V2ForPreTraining``, with
        ``config.require_same_masks``) sample it."""
        cfg = self.config
        return compute_span_mask(frame_lengths, max_frames, cfg.mask_time_prob, cfg.mask_time_length,
                                 cfg.mask_time_min_masks, require_same_masks=require_same_masks, generator=generator)

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        generator: torch.Generator | None = None,
        return_dict: bool | None = None,
        conv_features: torch.Tensor | None = None,
        layer_skip: list[bool] | None = None,
    ) -> W2V2BaseModelOutput:
        """input_values: (B, L) 16 kHz audio; attention_mask: (B, L) 1 on real samples; mask_time_indices: (B, T)
        bool frames to replace by the mask embedding (sampled in training from the config when None); generator:
        draws the masks; conv_features: (B, T, C) the feature encoder's output for ``input_values``, computed
        beforehand (the frozen encoder's frames from a ``hf_wav2vec2.feature_cache.FeatureCache``), or None: the
        encoder runs; layer_skip: the Transformer blocks LayerDrop skips in this pass (``encoder.layerdrop_plan``), or
        None: drawn from ``generator`` first, before the masks. ``return_dict`` is accepted for transformers'
        callers: the output is always a ``ModelOutput``, which also indexes like a tuple. Unknown keyword arguments
        raise a TypeError."""
        # 0. LayerDrop's blocks for this pass: the generator's first draw, so that a fresh generator fixes them
        skip = self.encoder.layerdrop_plan(generator) if layer_skip is None else layer_skip
        # 1. raw audio -> latent speech representations z (B, T, C)
        sample_lengths = self._check_inputs(input_values, attention_mask)
        features = conv_features if conv_features is not None else \
            self.feature_extractor(input_values, sample_lengths)  # (B, T, C)
        batch, t, _ = features.shape
        valid = frame_mask(self.num_frames(sample_lengths), t) if sample_lengths is not None else None
        penalty = feature_penalty(features, valid)

        # 2. layer norm + projection to the model width
        hidden, extract_features = self.feature_projection(features)  # (B, T, H), (B, T, C)

        # 3. mask spans of time steps with a learned vector (section 3.1) and, in fine-tuning, channels
        if mask_time_indices is None and self.training and self.config.apply_spec_augment \
                and self.config.mask_time_prob > 0:
            frame_lengths = valid.sum(1) if valid is not None else torch.full((batch,), t, device=hidden.device)
            mask_time_indices = self.sample_time_mask(frame_lengths, t, generator).to(hidden.device)
        if mask_time_indices is not None:
            if self.masked_spec_embed is None:
                raise ValueError("mask_time_indices given, but this model has no mask embedding (its config has "
                                 "mask_time_prob = mask_feature_prob = 0)")
            hidden = torch.where(mask_time_indices[..., None].to(hidden.device),
                                 self.masked_spec_embed.to(hidden.dtype), hidden)
        if self.training and self.config.apply_spec_augment and self.config.mask_feature_prob > 0:
            channels = compute_channel_mask(batch, hidden.shape[-1], self.config.mask_feature_prob,
                                            self.config.mask_feature_length, self.config.mask_feature_min_masks,
                                            generator=generator, device=hidden.device).to(hidden.device)
            hidden = hidden.masked_fill(channels[:, None, :], 0.0)

        # 4. context network g: Z -> C
        hidden, hidden_states = self.encoder(hidden, valid, bool(output_hidden_states), skip)
        return W2V2BaseModelOutput(last_hidden_state=hidden, extract_features=extract_features,
                                   feature_penalty=penalty, frame_mask=valid, hidden_states=hidden_states)


class W2V2ForPreTraining(W2V2PreTrainedModel):
    """wav2vec 2.0 self-supervised objective: contrastive task over quantized latents + diversity + feature
    penalty."""

    def __init__(self, config: W2V2Config):
        super().__init__(config)
        self.wav2vec2 = W2V2Model(config)
        self.dropout_features = Dropout(config.feat_quantizer_dropout)
        self.quantizer = GumbelQuantizer(config.conv_dim[-1], config.num_codevector_groups,
                                         config.num_codevectors_per_group, config.codevector_dim)
        self.project_hid = nn.Linear(config.hidden_size, config.proj_codevector_dim)
        self.project_q = nn.Linear(config.codevector_dim, config.proj_codevector_dim)
        self.quantizer.temperature = config.gumbel_temperature_start
        self.post_init()

    def set_gumbel_temperature(self, temperature: float):
        """Gumbel-softmax temperature tau for the next steps (training.schedules.gumbel_temperature gives it)."""
        self.quantizer.temperature = float(temperature)

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        sampled_negative_indices: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        generator: torch.Generator | None = None,
        return_dict: bool | None = None,
        layer_skip: list[bool] | None = None,
    ) -> W2V2ForPreTrainingOutput:
        """input_values: (B, L); attention_mask: (B, L); mask_time_indices: (B, T) bool, sampled when None;
        sampled_negative_indices: (B, T, K) long frame indices within the same utterance, sampled when None (only
        the rows at masked frames are read, and they must point at masked frames); generator: draws the masks, the
        negatives and the Gumbel noise (the global RNG when None); layer_skip: see :meth:`W2V2Model.forward`."""
        cfg = self.config
        base = self.wav2vec2
        # 0. LayerDrop's blocks: the generator's first draw, as in W2V2Model
        if layer_skip is None:
            layer_skip = base.encoder.layerdrop_plan(generator)
        # 1. mask: p * T / M spans of M frames per utterance, the same masked count in every row (section 3.1)
        if mask_time_indices is None:
            mask_time_indices = self.sample_mask(input_values, attention_mask, generator)
        mask = mask_time_indices.to(device=input_values.device, dtype=torch.bool)

        # 2. context network over the masked input: c (B, T, H)
        out = base(input_values, attention_mask, mask_time_indices=mask, output_hidden_states=output_hidden_states,
                   generator=generator, layer_skip=layer_skip)
        if out.frame_mask is not None and (mask & ~out.frame_mask).any():
            raise ValueError("mask_time_indices masks padded frames")
        num_masked = mask.sum()
        compiling = torch.compiler.is_compiling()
        n = num_masked if compiling else int(num_masked)  # the outputs' rows; a host sync in eager only
        if not compiling and n == 0:
            raise ValueError("no frame is masked: the contrastive task needs at least one masked frame per batch")

        # Rows of every tensor below: all B*T frames, the N masked ones first (in order), then the others, which are
        # computed and count nowhere. The shapes do not depend on N: (N, ...) tensors would change the sizes of the
        # allocations every step and fragment glibc's heap (docs/performance.md).
        batch, length = mask.shape
        order = torch.sort((~mask.flatten()).to(torch.uint8), stable=True).indices  # (B*T,)
        rows = torch.arange(batch * length, device=mask.device) < num_masked  # (B*T,) the masked frames

        # 3. quantize the unmasked latents of the masked frames: q_t (section 2)
        features = out.extract_features.flatten(0, 1)[order]  # (B*T, C)
        quantized = self.quantizer(self.dropout_features(features), generator, rows)
        targets = self.project_q(quantized.codevectors.to(self.project_q.weight.dtype))  # (B*T, D)
        context = self.project_hid(out.last_hidden_state.flatten(0, 1)[order])  # (B*T, D)

        # 4. K distractors from other masked frames of the same utterance (eq. 3)
        if sampled_negative_indices is None:
            sampled_negative_indices = sample_negatives(mask, cfg.num_negatives, generator)
        negative_index = self._masked_rows(mask, sampled_negative_indices.to(mask.device), order)  # (B*T, K)
        code = quantized.chosen_ids  # a distractor with the positive's codes is the positive itself
        same_code = (code[negative_index] == code[:, None, :]).all(-1)  # (B*T, K)

        # 5. contrastive, diversity and feature-penalty terms (eq. 2-4), summed over masked frames
        logits = contrastive_logits(context, targets, negative_index, same_code, cfg.contrastive_logits_temperature)
        contrastive_sum, correct = contrastive_loss(logits, rows)
        num_codevectors = cfg.num_codevector_groups * cfg.num_codevectors_per_group
        parts = pretraining_loss(contrastive_sum, diversity_loss(quantized.prob_perplexity, num_codevectors),
                                 out.feature_penalty, num_masked, cfg.diversity_loss_weight,
                                 cfg.feature_penalty_weight)
        return W2V2ForPreTrainingOutput(
            loss=parts.total, contrastive_loss_sum=parts.contrastive_sum, diversity_loss_sum=parts.diversity_sum,
            feature_penalty_sum=parts.feature_penalty_sum, prob_perplexity=quantized.prob_perplexity,
            code_perplexity=quantized.code_perplexity, accuracy=correct.float() / num_masked.clamp_min(1),
            num_masked=num_masked, projected_states=context[:n], projected_quantized_states=targets[:n],
            logits=logits[:n], mask_time_indices=mask, hidden_states=out.hidden_states,
        )

    def sample_mask(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, T) bool time mask for (B, L) audio, as ``forward`` draws it when given none: the config's p, M,
        minimum count and ``require_same_masks``; padded frames are never masked. The pretraining loop draws every
        micro-batch's mask first (to normalise the loss by the update's masked count before backward)."""
        t = int(self.num_frames(input_values.shape[-1]))
        frame_lengths = self.num_frames(attention_mask.long().sum(-1)) if attention_mask is not None \
            else torch.full((input_values.shape[0],), t, device=input_values.device)
        return self.wav2vec2.sample_time_mask(frame_lengths, t, generator, self.config.require_same_masks)

    def code_ids(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The quantizer's codes of every frame, as the codebook analysis of the paper's Figure 3 reads them.

        input_values: (B, L); attention_mask: (B, L). Returns (B, T, G) long: per frame the entry each of the G
        codebooks picks without Gumbel noise (the eval-mode choice), from the unmasked latents; -1 at padded
        frames. Runs the feature encoder and the quantizer only, not the context network.
        """
        base = self.wav2vec2
        sample_lengths = base._check_inputs(input_values, attention_mask)
        features = base.feature_extractor(input_values, sample_lengths)  # (B, T, C)
        _, normed = base.feature_projection(features)  # (B, T, C): what the quantizer reads in forward
        batch, t, channels = normed.shape
        codes = self.quantizer.code_ids(normed.reshape(batch * t, channels)).view(batch, t, -1)  # (B, T, G)
        if sample_lengths is not None:
            codes = codes.masked_fill(~frame_mask(self.num_frames(sample_lengths), t)[..., None], -1)
        return codes

    @staticmethod
    def _masked_rows(mask: torch.Tensor, negatives: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """(B, T, K) frame indices within each utterance -> (B*T, K) rows of the masked-first frame list ``order``
        (row i < N: the i-th masked frame; the rows of unmasked frames get some valid row)."""
        batch, length = mask.shape
        if negatives.shape[:2] != mask.shape:
            raise ValueError(f"sampled_negative_indices must be (batch, frames, K) = ({batch}, {length}, K), "
                             f"got {tuple(negatives.shape)}")
        flat_mask = mask.flatten()
        row_of_frame = flat_mask.long().cumsum(0) - 1  # (B*T,) position in the masked list
        flat = negatives.long() + (torch.arange(batch, device=mask.device) * length)[:, None, None]  # (B, T, K)
        flat = flat.clamp(0, batch * length - 1)  # entries at unmasked frames are arbitrary
        if not torch.compiler.is_compiling():
            if (((negatives < 0) | (negatives >= length)) & mask[..., None]).any():
                raise ValueError(f"sampled_negative_indices must lie in [0, {length})")
            if not (flat_mask[flat] | ~mask[..., None]).all():
                raise ValueError("sampled_negative_indices must point at masked frames of the same utterance")
        return row_of_frame[flat.flatten(0, 1)[order]].clamp_min(0)  # (B*T, K)


class W2V2ForCTC(W2V2PreTrainedModel):
    """wav2vec 2.0 with a linear CTC head over the context representations (section 4)."""

    def __init__(self, config: W2V2Config):
        super().__init__(config)
        if config.vocab_size is None:
            raise ValueError("W2V2ForCTC needs config.vocab_size (the CTC vocabulary size including the blank)")
        self.wav2vec2 = W2V2Model(config)
        self.dropout = Dropout(config.final_dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        generator: torch.Generator | None = None,
        return_dict: bool | None = None,
        conv_features: torch.Tensor | None = None,
    ) -> W2V2CTCOutput:
        """input_values: (B, L); attention_mask: (B, L); labels: (B, U) token ids padded with -100 (or the blank
        id, as transformers' collators may pad); conv_features: see :meth:`W2V2Model.forward`."""
        out = self.wav2vec2(input_values, attention_mask, output_hidden_states=output_hidden_states,
                            generator=generator, conv_features=conv_features)
        logits = self.lm_head(self.dropout(out.last_hidden_state))  # (B, T, V)
        b, t, _ = logits.shape
        frames = out.frame_mask.sum(1) if out.frame_mask is not None else torch.full((b,), t, device=logits.device)
        loss = None
        if labels is not None:
            if labels.max() >= self.config.vocab_size:
                raise ValueError(f"labels must lie below vocab_size={self.config.vocab_size}, got {int(labels.max())}")
            loss = ctc_loss(logits, labels, frames, self.config.pad_token_id, self.config.ctc_loss_reduction,
                            self.config.ctc_zero_infinity)
        return W2V2CTCOutput(loss=loss, logits=logits, frame_lengths=frames, hidden_states=out.hidden_states)
