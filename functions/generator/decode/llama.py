"""The native decoder for the Llama family: a forward pass in plain torch, batch-invariant.

The weights come from `generator.weights.llama` (fused projections: one
query-key-value and one gate-up matmul per layer). One decode step for B rows is, per
layer: RMSNorm, the fused QKV projection for all rows at once, rotary positions
(each row at its own position), attention, the output projection, RMSNorm, the fused
gate-up projection, SwiGLU, the down projection — about 25 operations per layer, where
transformers' modeling code runs about 100.

**Batch invariance.** Every row keeps its own KV cache (`RowCache`: its own length, no
padding), and attention runs row by row over exactly that row's keys; everything else
(norms, projections, activations) computes each row independently of the others
(`generator.weights.llama.Dense` pads the one kernel that does not). So a row's logits
are bit for bit those it gets decoding alone, in every precision, whoever else is in
the batch: a seed gives the same text whatever the traffic. The per-row attention is
cheap next to the projections at these lengths; the projections, which read the
weights, are shared by all rows as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from generator.weights.llama import LlamaWeights

# Capacity a row's cache grows by at least (tokens): growing copies the cache.
_CACHE_STEP = 256


class RowCache:
    """One generation's keys and values, every layer: [layers, kv_heads, capacity, head_dim]."""

    def __init__(self, weights: LlamaWeights, capacity: int) -> None:
        config = weights.config
        shape = (config.layers, config.kv_heads, capacity, config.head_dim)
        self.keys = torch.empty(shape, dtype=weights.dtype, device=weights.device)
        self.values = torch.empty(shape, dtype=weights.dtype, device=weights.device)
        self.length = 0

    @property
    def capacity(self) -> int:
        return int(self.keys.shape[2])

    def reserve(self, tokens: int) -> None:
        """Make room for `tokens` more positions."""
        needed = self.length + tokens
        if needed <= self.capacity:
            return
        capacity = max(needed, self.capacity + _CACHE_STEP, 2 * self.capacity)
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_empty((*old.shape[:2], capacity, old.shape[3]))
            new[:, :, : self.length] = old[:, :, : self.length]
            setattr(self, name, new)


class LlamaDecoder:
    """Prefill and batched decode steps over `LlamaWeights`."""

    def __init__(self, weights: LlamaWeights) -> None:
        self.weights = weights
        self.device = weights.device
        self._cos = torch.empty(0, device=self.device)
        self._sin = torch.empty(0, device=self.device)

    def prefill(self, prompt_ids: list[int], reserve: int = 0) -> tuple[torch.Tensor, RowCache]:
        """The prompt alone: (its last position's logits [1, vocab], its cache, with room
        for `reserve` more tokens)."""
        cache = RowCache(self.weights, len(prompt_ids) + max(reserve, 1))
        hidden = self._forward(torch.tensor(prompt_ids, device=self.device), [cache])
        return self._logits(hidden[-1:]), cache

    def logits(self, ids: list[int]) -> torch.Tensor:
        """Every position's next-token logits [tokens, vocab] (teacher forcing)."""
        cache = RowCache(self.weights, len(ids))
        return self._logits(self._forward(torch.tensor(ids, device=self.device), [cache]))

    def step(self, caches: list[RowCache], tokens: list[int]) -> torch.Tensor:
        """Each row's next token after its newest one: logits [rows, vocab]."""
        for cache in caches:
            cache.reserve(1)
        hidden = self._forward(torch.tensor(tokens, device=self.device), caches)
        return self._logits(hidden)

    def mergeable(self, cache: RowCache, length: int) -> bool:
        return True

    def open_batch(self, cache: RowCache, length: int) -> LlamaBatch:
        return LlamaBatch(self)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        config = self.weights.config
        normed = F.rms_norm(hidden, (config.hidden_size,), self.weights.norm, config.rms_norm_eps)
        return self.weights.head(normed)

    def _forward(self, tokens: torch.Tensor, caches: list[RowCache]) -> torch.Tensor:
        """Hidden states after the last layer for `tokens`: either one row's whole new
        span (one cache; prefill) or one token for each row (one cache per token)."""
        weights, config = self.weights, self.weights.config
        span = tokens.shape[0] if len(caches) == 1 else 1
        starts = [cache.length for cache in caches]
        if len(caches) == 1:
            positions = torch.arange(starts[0], starts[0] + span, device=self.device)
        else:
            positions = torch.tensor(starts, device=self.device)
        cos, sin = self._rotary(positions)
        heads, kv_heads, head_dim = config.heads, config.kv_heads, config.head_dim
        norm_shape, eps = (config.hidden_size,), config.rms_norm_eps
        x = weights.embeddings[tokens]
        for index, layer in enumerate(weights.layers):
            h = F.rms_norm(x, norm_shape, layer.input_norm, eps)
            qkv = layer.qkv(h).view(-1, heads + 2 * kv_heads, head_dim)
            # Queries and keys rotate together (their heads side by side).
            qk = _rotate(qkv[:, : heads + kv_heads], cos, sin)
            q, k = qk[:, :heads], qk[:, heads:]
            v = qkv[:, heads + kv_heads :]
            outputs = []
            for row, (cache, start) in enumerate(zip(caches, starts, strict=True)):
                rows = slice(row * span, (row + 1) * span)
                end = start + span
                # [span, kv_heads, head_dim] → the cache's [kv_heads, span, head_dim]
                cache.keys[index, :, start:end] = k[rows].transpose(0, 1)
                cache.values[index, :, start:end] = v[rows].transpose(0, 1)
                keys, values = cache.keys[index, :, :end], cache.values[index, :, :end]
                if span == 1:
                    outputs.append(_attend_one(q[rows], keys, values))
                    continue
                attended = F.scaled_dot_product_attention(
                    q[rows].transpose(0, 1).unsqueeze(0),
                    keys.unsqueeze(0),
                    values.unsqueeze(0),
                    is_causal=True,
                    enable_gqa=heads != kv_heads,
                )
                outputs.append(attended[0].transpose(0, 1).reshape(span, heads * head_dim))
            attention = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
            x = x + layer.output(attention)
            h = F.rms_norm(x, norm_shape, layer.post_norm, eps)
            gate, up = layer.gate_up(h).chunk(2, dim=-1)
            x = x + layer.down(F.silu(gate) * up)
        for cache in caches:
            cache.length += span
        return x

    def _rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for `positions`, [tokens, 1, head_dim], in the activations' dtype
        (computed in float32 as transformers computes them)."""
        needed = int(positions.max()) + 1
        if needed > self._cos.shape[0]:
            config = self.weights.config
            length = max(needed, min(2 * self._cos.shape[0], config.context_length), 1024)
            half = torch.arange(0, config.head_dim, 2, dtype=torch.float32, device=self.device)
            inverse = 1.0 / (config.rope_theta ** (half / config.head_dim))
            angles = torch.outer(torch.arange(length, device=self.device).float(), inverse)
            angles = torch.cat([angles, angles], dim=-1)
            self._cos = angles.cos().to(self.weights.dtype)
            self._sin = angles.sin().to(self.weights.dtype)
        return self._cos[positions].unsqueeze(1), self._sin[positions].unsqueeze(1)


def _attend_one(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """One new token's attention over a row's keys: query [1, heads, head_dim], keys and
    values [kv_heads, tokens, head_dim] → [1, heads * head_dim].

    Written out rather than `scaled_dot_product_attention`, whose CPU kernel costs about
    three times as much for a single query (it is built for long ones); the softmax is
    taken in float32 as that kernel does."""
    kv_heads, _, head_dim = keys.shape
    grouped = query.view(kv_heads, -1, head_dim)  # the query heads that share a key head
    scores = torch.matmul(grouped, keys.transpose(-1, -2)) * head_dim**-0.5
    weights = torch.softmax(scores.float(), dim=-1).to(values.dtype)
    return torch.matmul(weights, values).view(1, -1)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding in transformers' layout (the two halves of each head)."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


class LlamaBatch:
    """Rows decoding together, each with its own cache: `DecodeBatch`'s interface for the
    native decoder. Any row can join any batch (no padding to agree on)."""

    shared = True

    def __init__(self, decoder: LlamaDecoder) -> None:
        self._decoder = decoder
        self._caches: list[RowCache] = []

    @property
    def size(self) -> int:
        return len(self._caches)

    def add(self, cache: RowCache, length: int) -> None:
        if cache.length != length:
            raise ValueError(f"a cache of {cache.length} tokens offered as {length}")
        self._caches.append(cache)

    def step(self, tokens: list[int]) -> torch.Tensor:
        if len(tokens) != self.size:
            raise ValueError(f"{len(tokens)} tokens for {self.size} rows")
        return self._decoder.step(self._caches, tokens)

    def keep(self, rows: list[int]) -> None:
        self._caches = [self._caches[i] for i in rows]
