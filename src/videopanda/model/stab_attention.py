"""The STAB's three one-query attentions (GSTRA, LSD, FSRA), without projecting every key.

Each query attends over many tokens with linear key/value projections. For
one query per group the keys and values need not be formed: with ``y`` the
normalised tokens, ``W_k,h``/``W_v,h`` head h's rows of the projections,

    score_h(i) = q_h . (W_k,h y_i + b_k,h) = (W_k,h^T q_h) . y_i + const_h
    out_h      = sum_i a_h(i) (W_v,h y_i + b_v,h) = W_v,h (sum_i a_h(i) y_i) + b_v,h

(the constant is the same for every token of the head, so the softmax drops it;
the weights a_h sum to 1, so the value bias passes through). This is exact and
costs two ``d x d`` products per query instead of ``2 d x d`` per token.

Shape legend: B query groups, K tokens per group, H heads, e = d / H head width.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from transformers.modeling_layers import GradientCheckpointingLayer


def attend_one_query(query: Tensor, tokens: Tensor, key_weight: Tensor, value_weight: Tensor, scale: float,
                     token_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """query (B, H, e) projected, tokens (B, K, d) normalised, weights (H*e, d) -> the output (B, H, e) without
    the value bias, and the attention weights (B, H, K).

    ``token_mask`` (B, K) bool marks the real tokens of ragged groups (padding scores -inf, weight 0).
    """
    heads, head_dim = query.shape[1:]
    key_heads = key_weight.view(heads, head_dim, -1)  # (H, e, d)
    key_query = torch.bmm(query.transpose(0, 1), key_heads).transpose(0, 1)  # (B, H, d): W_k,h^T q_h
    scores = torch.bmm(key_query, tokens.transpose(1, 2)) * scale  # (B, H, K)
    if token_mask is not None:
        scores = scores.masked_fill(~token_mask[:, None, :], float("-inf"))
    weights = scores.softmax(-1)  # (B, H, K)
    pooled = torch.bmm(weights, tokens)  # (B, H, d): sum_i a_h(i) y_i
    value_heads = value_weight.view(heads, head_dim, -1)  # (H, e, d)
    return torch.bmm(pooled.transpose(0, 1), value_heads.transpose(1, 2)).transpose(0, 1), weights  # (B, H, e)


class GSTRAMlp(nn.Module):
    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.c_fc = nn.Linear(dim, 4 * dim)
        self.dropout = nn.Dropout(dropout)
        self.c_proj = nn.Linear(4 * dim, dim)
        nn.init.zeros_(self.c_proj.weight)
        nn.init.zeros_(self.c_proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.c_fc(x)
        return self.c_proj(self.dropout(x * torch.sigmoid(1.702 * x)))  # QuickGELU


class GlobalSpatioTemporalAttention(GradientCheckpointingLayer):
    """GSTRA: one query cross-attends over all of a chunk's tokens (pre-norm block).

    ``attn`` holds the weights as ``nn.MultiheadAttention`` stores them (packed
    q/k/v in-projection with bias, out-projection); scale ``1/sqrt(d/H)``.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)
        self.ln_1 = nn.LayerNorm(dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.ln_3 = nn.LayerNorm(dim)
        self.mlp = GSTRAMlp(dim, dropout)

    def forward(self, query: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """query (C, 1, d), tokens (C, K, d) -> the new query (C, 1, d) and the attention weights (C, H, K)."""
        attn = self.attn
        q_weight, k_weight, v_weight = attn.in_proj_weight.chunk(3)
        q_bias, _, v_bias = attn.in_proj_bias.chunk(3)  # the key bias shifts each head's scores by a constant
        q = nn.functional.linear(self.ln_1(query[:, 0]), q_weight, q_bias)  # (C, d)
        pooled, weights = attend_one_query(q.unflatten(1, (attn.num_heads, -1)), self.ln_3(tokens), k_weight,
                                           v_weight, attn.head_dim**-0.5)  # (C, H, e), (C, H, K)
        query = query + attn.out_proj(pooled.flatten(1) + v_bias)[:, None]  # (C, 1, d)
        return query + self.mlp(self.ln_2(query)), weights


class _QueryKeyValueAttention(GradientCheckpointingLayer):
    """LN+Linear query, LN+Linear key/value (no bias), 8 heads, residual on the query.

    The attention form shared by LSD and FSRA. Scale is ``d ** -0.5`` (the full
    width, not the head width), as in the release.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = dim**-0.5
        self.q = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim, bias=False))
        self.kv = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim, bias=False))
        self.proj = nn.Linear(dim, dim)

    def _attend(self, query: Tensor, tokens: Tensor, token_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """query (B, d) raw, tokens (B, K, d) raw -> the attention output before the residual (B, d) and the
        attention weights (B, H, K)."""
        q = self.q(query).unflatten(1, (self.num_heads, -1))  # (B, H, e)
        norm, key_value = cast(tuple[nn.LayerNorm, nn.Linear], tuple(self.kv))
        key_weight, value_weight = key_value.weight.chunk(2)
        pooled, weights = attend_one_query(q, norm(tokens), key_weight, value_weight, self.scale, token_mask)
        return self.proj(pooled.flatten(1)), weights


class WindowAttention(_QueryKeyValueAttention):
    """LSD: each window's average attends over the window's tokens."""

    def forward(self, query: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        """query (N, d), keys (N, K, d) -> (N, d) and the attention weights (N, H, K)."""
        out, weights = self._attend(query, keys)
        return query + out, weights


class SegmentAttention(_QueryKeyValueAttention):
    """FSRA: one shared query attends over each frame's ragged set of LSD tokens."""

    def forward(self, query: Tensor, keys: Tensor, token_mask: Tensor) -> tuple[Tensor, Tensor]:
        """query (d,), keys (G, L, d) padded per frame, token_mask (G, L) bool -> (G, d) and the attention
        weights (G, H, L)."""
        out, weights = self._attend(query.expand(keys.shape[0], -1), keys, token_mask)
        return query + out, weights
