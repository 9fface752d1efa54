"""Does a compiled decode step pay? One layer's MLP block of the native decoder (RMSNorm,
the fused 4-bit gate-up projection, SwiGLU, the down projection, the residual), one
row, eager against `torch.compile` (Inductor): the compilation time and the time per
call, side by side in one process, medians of 5.

Run: `PYTHONPATH=functions:scripts .venv/bin/python -m devtools.compile_lever`
(the default model, `make model` first). docs/performance.md reports its figures.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from generator.settings import Settings
from generator.weights.llama import LlamaWeights
from generator.weights.loaded import load

Block = Callable[[torch.Tensor], torch.Tensor]


def mlp_block(weights: LlamaWeights) -> Block:
    config, layer = weights.config, weights.layers[0]

    def block(x: torch.Tensor) -> torch.Tensor:
        h = F.rms_norm(x, (config.hidden_size,), layer.post_norm, config.rms_norm_eps)
        gate, up = layer.gate_up(h).chunk(2, dim=-1)
        return x + layer.down(F.silu(gate) * up)

    return block


def microseconds_per_call(block: Block, x: torch.Tensor, calls: int = 2000) -> float:
    for _ in range(50):
        block(x)
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            block(x)
        runs.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(runs)


@torch.inference_mode()
def main() -> None:
    weights = load(Settings()).model
    if not isinstance(weights, LlamaWeights):
        raise SystemExit("the default model is not served by the native decoder here")
    block = mlp_block(weights)
    x = torch.randn(1, weights.config.hidden_size, dtype=weights.dtype)
    eager = microseconds_per_call(block, x)
    started = time.perf_counter()
    compiled: Block = torch.compile(block, dynamic=False)
    compiled(x)
    compile_s = time.perf_counter() - started
    fast = microseconds_per_call(compiled, x)
    layers = weights.config.layers
    print(
        f"MLP block, one row: eager {eager:.1f} µs, compiled {fast:.1f} µs "
        f"({eager / fast:.2f}×), compilation {compile_s:.1f} s; "
        f"× {layers} layers: {eager * layers / 1e3:.2f} ms vs {fast * layers / 1e3:.2f} ms a token"
    )


if __name__ == "__main__":
    main()
