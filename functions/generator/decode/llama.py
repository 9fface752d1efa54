"""The native decoder for the Llama family: a forward pass in plain torch, batch-invariant.

The weights come from `generator.weights.llama` (fused projections: one
query-key-value and one gate-up matmul per layer). One decode step for B rows is, per
layer: RMSNorm, the fused QKV projection for all rows at once, rotary positions (each
row at its own position), attention, the output projection, RMSNorm, the fused gate-up
projection, SwiGLU, the down projection — about 25 operations per layer whatever B is,
where transformers' modeling code runs about 100.

**Batch invariance.** A row's logits are bit for bit those it gets decoding alone, in
every precision, whoever else is in the batch, so a seed gives the same text whatever
the traffic. What makes it so:

- Each row's keys and values start at position 0 of its own slot of the batch's cache
  (`LlamaBatch`; no left padding), so nothing about a row's data depends on the others.
- Attention for a row reads its slot up to a length that depends on that row alone:
  its own length rounded up to a bucket of `BUCKET` positions, the rest masked. The
  batch computes over the longest row's bucket, and the extra positions are exact
  zeros after the softmax (masked scores, zero values), which changes no sum:
  measured on this machine's kernels, a row's attention over its own bucket equals,
  bit for bit, its attention in a batch of up to 8 rows of up to 400 positions, in
  bfloat16 and float32. Decoding alone is a batch of one, through the same code.
- Norms, projections and activations compute each row on its own
  (`generator.weights.llama.Dense` pads the one kernel that does not).

`tests/generator/test_native_decoder.py` checks the invariance token for token with
rows joining and leaving, in the low-bit default, bfloat16 and float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from generator.weights.llama import LlamaWeights

# Attention length granularity: a row attends over its own length rounded up to this.
BUCKET = 64

Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _bucket(length: int) -> int:
    return -(-length // BUCKET) * BUCKET


class RowCache:
    """One prompt's keys and values after prefill, every layer: [layers, kv_heads,
    tokens, head_dim]."""

    def __init__(self, weights: LlamaWeights, tokens: int) -> None:
        config = weights.config
        shape = (config.layers, config.kv_heads, tokens, config.head_dim)
        self.keys = torch.empty(shape, dtype=weights.dtype, device=weights.device)
        self.values = torch.empty(shape, dtype=weights.dtype, device=weights.device)

    @property
    def length(self) -> int:
        return int(self.keys.shape[2])


class LlamaDecoder:
    """Prefill, teacher-forced logits, and batches of rows decoding together."""

    def __init__(self, weights: LlamaWeights) -> None:
        self.weights = weights
        self.device = weights.device
        self._cos = torch.empty(0, device=self.device)
        self._sin = torch.empty(0, device=self.device)

    def prefill(self, prompt_ids: list[int]) -> tuple[torch.Tensor, RowCache]:
        """The prompt alone: (its last position's logits [1, vocab], its cache)."""
        hidden, cache = self._prefill(prompt_ids)
        return self.logits_of(hidden[-1:]), cache

    def logits(self, ids: list[int]) -> torch.Tensor:
        """Every position's next-token logits [tokens, vocab] (teacher forcing)."""
        return self.logits_of(self._prefill(ids)[0])

    def mergeable(self, cache: RowCache, length: int) -> bool:
        return True

    def open_batch(self, cache: RowCache, length: int) -> LlamaBatch:
        return LlamaBatch(self)

    def logits_of(self, hidden: torch.Tensor) -> torch.Tensor:
        config = self.weights.config
        normed = F.rms_norm(hidden, (config.hidden_size,), self.weights.norm, config.rms_norm_eps)
        return self.weights.head(normed)

    def _prefill(self, ids: list[int]) -> tuple[torch.Tensor, RowCache]:
        cache = RowCache(self.weights, len(ids))
        heads = self.weights.config.heads

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            # [tokens, heads, head_dim] → [heads, tokens, head_dim], causal.
            cache.keys[layer] = k.transpose(0, 1)
            cache.values[layer] = v.transpose(0, 1)
            attended = F.scaled_dot_product_attention(
                q.transpose(0, 1).unsqueeze(0),
                cache.keys[layer].unsqueeze(0),
                cache.values[layer].unsqueeze(0),
                is_causal=True,
                enable_gqa=heads != cache.keys.shape[1],
            )
            return attended[0].transpose(0, 1).reshape(len(ids), -1)

        positions = torch.arange(len(ids), device=self.device)
        return self.forward(torch.tensor(ids, device=self.device), positions, attend), cache

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, attend: Attend
    ) -> torch.Tensor:
        """Hidden states after the last layer for `tokens` at `positions`; `attend`
        stores each layer's keys and values and returns its attention output."""
        weights, config = self.weights, self.weights.config
        heads, kv_heads, head_dim = config.heads, config.kv_heads, config.head_dim
        norm_shape, eps = (config.hidden_size,), config.rms_norm_eps
        cos, sin = self._rotary(positions)
        x = weights.embeddings[tokens]
        for index, layer in enumerate(weights.layers):
            h = F.rms_norm(x, norm_shape, layer.input_norm, eps)
            qkv = layer.qkv(h).view(-1, heads + 2 * kv_heads, head_dim)
            # Queries and keys rotate together (their heads side by side).
            qk = _rotate(qkv[:, : heads + kv_heads], cos, sin)
            x = x + layer.output(
                attend(index, qk[:, :heads], qk[:, heads:], qkv[:, heads + kv_heads :])
            )
            h = F.rms_norm(x, norm_shape, layer.post_norm, eps)
            gate, up = layer.gate_up(h).chunk(2, dim=-1)
            x = x + layer.down(F.silu(gate) * up)
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


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding in transformers' layout (the two halves of each head)."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


class LlamaBatch:
    """Rows decoding together: `generator.decode.decoder.Batch` for the native decoder.

    The cache holds every row in a slot of its own, [layers, rows, kv_heads, capacity,
    head_dim], each row's positions from 0 and zeros past its length; capacity grows in
    whole buckets. Any row can join any batch (no padding to agree on)."""

    shared = True

    def __init__(self, decoder: LlamaDecoder) -> None:
        self._decoder = decoder
        weights = decoder.weights
        config = weights.config
        empty = (config.layers, 0, config.kv_heads, 0, config.head_dim)
        self._keys = torch.zeros(empty, dtype=weights.dtype, device=weights.device)
        self._values = torch.zeros_like(self._keys)
        self._lengths: list[int] = []

    @property
    def size(self) -> int:
        return len(self._lengths)

    def add(self, cache: RowCache, length: int) -> None:
        if cache.length != length:
            raise ValueError(f"a cache of {cache.length} tokens offered as {length}")
        # Build first, then swap in: a failure (out of memory) leaves the batch as it was.
        keys, values = self._resized(self.size + 1, max(self._capacity, _bucket(length + 1)))
        keys[:, -1, :, :length] = cache.keys
        values[:, -1, :, :length] = cache.values
        self._keys, self._values = keys, values
        self._lengths.append(length)

    def step(self, tokens: list[int]) -> torch.Tensor:
        if len(tokens) != self.size:
            raise ValueError(f"{len(tokens)} tokens for {self.size} rows")
        device = self._decoder.device
        positions = torch.tensor(self._lengths, device=device)
        width = _bucket(max(self._lengths) + 1)
        if width > self._capacity:
            self._keys, self._values = self._resized(self.size, width)
        rows = torch.arange(self.size, device=device)
        # Each row sees its own positions and the new one; the rest of the width is masked.
        hidden = torch.arange(width, device=device)[None, :] > positions[:, None]
        mask = hidden[:, None, None, :]  # [rows, 1, 1, width]
        keys, values = self._keys[:, :, :, :width], self._values[:, :, :, :width]
        kv_heads = keys.shape[2]
        head_dim = keys.shape[-1]

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            keys[layer, rows, :, positions] = k
            values[layer, rows, :, positions] = v
            # The query heads that share a key head: [rows, kv_heads, group, head_dim].
            grouped = q.view(len(tokens), kv_heads, -1, head_dim)
            scores = torch.matmul(grouped, keys[layer].transpose(-1, -2)) * head_dim**-0.5
            scores = scores.masked_fill(mask, -torch.inf)
            weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype)
            return torch.matmul(weights, values[layer]).view(len(tokens), -1)

        tokens_in = torch.tensor(tokens, device=device)
        out = self._decoder.forward(tokens_in, positions, attend)
        self._lengths = [n + 1 for n in self._lengths]
        return self._decoder.logits_of(out)

    def keep(self, rows: list[int]) -> None:
        if rows == list(range(self.size)):
            return
        index = torch.tensor(rows, dtype=torch.long, device=self._decoder.device)
        self._keys = self._keys.index_select(1, index)
        self._values = self._values.index_select(1, index)
        self._lengths = [self._lengths[i] for i in rows]

    @property
    def _capacity(self) -> int:
        return int(self._keys.shape[3])

    def _resized(self, rows: int, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        """New zeroed cache tensors of `rows` slots and `capacity` positions holding the
        current rows' contents."""
        layers, old_rows, kv_heads, old_capacity, head_dim = self._keys.shape
        shape = (layers, rows, kv_heads, capacity, head_dim)
        keys = self._keys.new_zeros(shape)
        values = self._values.new_zeros(shape)
        keys[:, :old_rows, :, :old_capacity] = self._keys
        values[:, :old_rows, :, :old_capacity] = self._values
        return keys, values
