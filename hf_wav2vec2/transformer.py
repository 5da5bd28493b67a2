"""The context network ``g: Z -> C`` (section 2): convolutional relative positional embedding, then a stack of
Transformer blocks, post-LN (BASE) or pre-LN (``do_stable_layer_norm``, LARGE-LV60), with SDPA attention and
LayerDrop."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration import W2V2Config
from .kernels_attention import dropout_attention
from .kernels_dropout import Dropout
from .kernels_fft import conv1d_same_channels_last
from .kernels_recompute import activate_then_linear


class PositionalConvEmbedding(nn.Module):
    """Grouped conv over time with weight normalisation (dim=2, as fairseq), 'same' length, GELU. (B, T, H) -> same.

    An even kernel with padding k // 2 would yield one frame too many: ``conv1d_same_channels_last`` drops the
    last (fairseq's SamePad); on CPU it computes the convolution by FFT."""

    def __init__(self, hidden_size: int, kernel: int, groups: int):
        super().__init__()
        conv = nn.Conv1d(hidden_size, hidden_size, kernel_size=kernel, padding=kernel // 2, groups=groups)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(conv1d_same_channels_last(x, self.conv.weight, self.conv.bias))  # (B, T, H)


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``. Names match the official checkpoints."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, H); key_mask: (B, 1, 1, T) bool, True where a key may be attended, or None."""
        b, t, h = x.shape
        # One GEMM for q, k and v: the three official weight matrices concatenated on the fly.
        weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        bias = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
        qkv = F.linear(x, weight, bias).view(b, t, 3, self.num_heads, h // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, head_dim)
        y = dropout_attention(q, k, v, key_mask, self.dropout if self.training else 0.0)  # (B, heads, T, head_dim)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, h))  # (B, T, H)


class FeedForward(nn.Module):
    """Linear -> activation -> dropout -> linear -> dropout. (B, T, H) -> same. Names match the official checkpoints."""

    def __init__(self, hidden_size: int, intermediate_size: int, activation: str, activation_dropout: float,
                 hidden_dropout: float):
        super().__init__()
        self.intermediate_dense = nn.Linear(hidden_size, intermediate_size)
        self.intermediate_act_fn = ACT2FN[activation]
        self.intermediate_dropout = Dropout(activation_dropout)
        self.output_dense = nn.Linear(intermediate_size, hidden_size)
        self.output_dropout = Dropout(hidden_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.intermediate_dense(x)  # (B, T, intermediate_size)
        dropout = self.intermediate_dropout.p if self.training else 0.0
        x = activate_then_linear(x, self.intermediate_act_fn, self.output_dense, dropout)  # (B, T, H)
        return self.output_dropout(x)


class EncoderLayer(GradientCheckpointingLayer):
    """One Transformer block. Post-LN (BASE): x = LN(x + attn(x)); x = LN'(x + ffn(x)).
    Pre-LN (LARGE-LV60): x = x + attn(LN(x)); x = x + ffn(LN'(x))."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, activation: str,
                 hidden_dropout: float, attention_dropout: float, activation_dropout: float, eps: float,
                 pre_norm: bool):
        super().__init__()
        self.pre_norm = pre_norm
        self.attention = Attention(hidden_size, num_heads, attention_dropout)
        self.dropout = Dropout(hidden_dropout)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.feed_forward = FeedForward(hidden_size, intermediate_size, activation, activation_dropout,
                                        hidden_dropout)
        self.final_layer_norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.dropout(self.attention(self.layer_norm(x), key_mask))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.dropout(self.attention(x, key_mask)))
        return self.final_layer_norm(x + self.feed_forward(x))


class Encoder(nn.Module):
    """Positional conv embedding + blocks. (B, T, H) -> (B, T, H), plus every block's input when asked."""

    def __init__(self, config: W2V2Config):
        super().__init__()
        self.pre_norm = config.do_stable_layer_norm
        self.layerdrop = config.layerdrop
        self.pos_conv_embed = PositionalConvEmbedding(
            config.hidden_size, config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
        )
        # Post-LN: normalises the block input. Pre-LN: normalises the last block's output.
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList([
            EncoderLayer(config.hidden_size, config.num_attention_heads, config.intermediate_size, config.hidden_act,
                         config.hidden_dropout, config.attention_dropout, config.activation_dropout,
                         config.layer_norm_eps, config.do_stable_layer_norm)
            for _ in range(config.num_hidden_layers)
        ])

    def layerdrop_plan(self, generator: torch.Generator | None = None) -> list[bool]:
        """Which blocks LayerDrop (Fan et al., 2019) skips in one forward pass: each with probability ``layerdrop``
        in training, none otherwise. Drawn in one go, ``torch.rand(num_blocks, generator=generator) < layerdrop`` on
        the generator's device (one small host copy there), or from the global CPU RNG without a generator. They
        stay Python decisions in the eager loop (compile_stages compiles each block, not the loop): a skipped block
        then leaves its parameters without gradient, as fairseq's, which a traced select could not."""
        if not (self.training and self.layerdrop > 0.0):
            return [False] * len(self.layers)
        device = generator.device if generator is not None else "cpu"
        return (torch.rand(len(self.layers), generator=generator, device=device) < self.layerdrop).tolist()

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor | None = None, output_hidden_states: bool = False,
        skip: list[bool] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """x: (B, T, H); valid: (B, T) bool real frames, or None when nothing is padded; skip: the blocks to skip
        (:meth:`layerdrop_plan`), None: run them all."""
        key_mask = None
        if valid is not None:
            x = x.masked_fill(~valid[..., None], 0.0)  # padding contributes nothing to the positional conv
            key_mask = valid[:, None, None, :]  # (B, 1, 1, T)
        x = x + self.pos_conv_embed(x)
        if not self.pre_norm:
            x = self.layer_norm(x)
        x = self.dropout(x)

        skip = skip or [False] * len(self.layers)
        hidden_states = [] if output_hidden_states else None
        for layer, skipped in zip(self.layers, skip):
            if hidden_states is not None:
                hidden_states.append(x)
            if not skipped:
                x = layer(x, key_mask)
        if self.pre_norm:
            x = self.layer_norm(x)
        if hidden_states is not None:
            hidden_states.append(x)
        return x, tuple(hidden_states) if hidden_states is not None else None
