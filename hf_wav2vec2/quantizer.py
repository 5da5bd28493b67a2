"""Gumbel product quantizer (section 2, "Quantization module"): G codebooks of V entries; a frame picks one entry
per codebook and the G entries are concatenated."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class QuantizerOutput:
    """codevectors: (N, d) quantized frames; chosen_ids: (N, G) the entries they are made of (Gumbel-noised in
    training, the argmax in eval; ``GumbelQuantizer.code_ids`` is always the noiseless argmax); prob_perplexity:
    perplexity of the averaged softmax (the diversity loss uses it); code_perplexity: perplexity of the noiseless
    argmax entries."""

    codevectors: torch.Tensor
    chosen_ids: torch.Tensor
    prob_perplexity: torch.Tensor
    code_perplexity: torch.Tensor


def _perplexity(marginal: torch.Tensor) -> torch.Tensor:
    """marginal: (G, V) distributions -> sum over groups of exp(entropy)."""
    return torch.exp(-torch.xlogy(marginal, marginal).sum(-1)).sum()


def _hard_gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator | None) -> torch.Tensor:
    """(N, G, V) logits -> (N, G, V) one-hot of argmax((logits + g) / tau), g ~ Gumbel(0, 1), whose gradient is that
    of the softmax (straight-through, Jang et al. 2017): ``F.gumbel_softmax(hard=True)``, but with the noise drawn
    from ``generator``. -log(Exp(1)) is a standard Gumbel draw."""
    gumbels = -torch.empty_like(logits).exponential_(generator=generator).log()
    soft = torch.softmax((logits + gumbels) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


class GumbelQuantizer(nn.Module):
    """(N, C) features -> (N, d) codevectors. Training: straight-through hard Gumbel-softmax at ``temperature``;
    eval: argmax. Parameter names match the official checkpoints (``weight_proj``, ``codevectors``)."""

    def __init__(self, in_dim: int, num_groups: int, num_vars: int, codevector_dim: int):
        super().__init__()
        self.num_groups, self.num_vars = num_groups, num_vars
        self.weight_proj = nn.Linear(in_dim, num_groups * num_vars)
        self.codevectors = nn.Parameter(torch.empty(1, num_groups * num_vars, codevector_dim // num_groups))
        self.temperature = 2.0  # annealed by the training loop (training.schedules.gumbel_temperature)

    def _logits(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (N, G, V) fp32: Gumbel noise and softmax in half precision lose the small differences that
        pick the code."""
        return self.weight_proj(features).float().view(features.shape[0], self.num_groups, self.num_vars)

    def code_ids(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (N, G) long: the entry each codebook picks without Gumbel noise (the eval-mode choice)."""
        return self._logits(features).argmax(-1)

    def forward(self, features: torch.Tensor, generator: torch.Generator | None = None,
                rows: torch.Tensor | None = None) -> QuantizerOutput:
        """features: (N, C). ``generator`` draws the Gumbel noise in training (the global RNG when None), so that the
        pretraining loop can key it, like the masks and negatives, by update and micro-batch. rows: (N,) bool, the
        rows the perplexities average over (all when None); the others are quantized too, and count nowhere."""
        n = features.shape[0]
        logits = self._logits(features)  # (N, G, V)
        argmax_ids = logits.argmax(-1)  # (N, G) the noiseless choice: eval's, and fairseq's code_perplexity's
        book = self.codevectors.view(self.num_groups, self.num_vars, -1)  # (G, V, d/G)

        if self.training:
            onehot = _hard_gumbel_softmax(logits, self.temperature, generator)  # (N, G, V), straight-through
            chosen_ids = onehot.argmax(-1)
            # A batched matmul per group, never a (N, G*V, d) broadcast.
            q = torch.einsum("ngv,gvd->ngd", onehot.to(book.dtype), book)
        else:
            chosen_ids = argmax_ids
            q = book[torch.arange(self.num_groups, device=chosen_ids.device), chosen_ids]  # (N, G, d/G) gather

        soft, hard = torch.softmax(logits, dim=-1), F.one_hot(argmax_ids, self.num_vars).float()  # (N, G, V)
        if rows is None:
            soft, hard = soft.mean(0), hard.mean(0)  # (G, V)
        else:
            weight = rows.to(soft.dtype)[:, None, None] / rows.sum().clamp_min(1)
            soft, hard = (soft * weight).sum(0), (hard * weight).sum(0)
        return QuantizerOutput(q.reshape(n, -1), chosen_ids, _perplexity(soft), _perplexity(hard))
