"""The native decoder for the Llama family (`generator.decode.llama`).

- It computes what transformers' modeling code computes (float32 logits, on tiny random
  Llama, Mistral and Qwen2 models and on the real default model).
- It is batch-invariant: a row's logits are bit for bit those it gets alone, whoever
  joins or leaves the batch around it, in every precision the default model is served
  in (the low-bit default, bfloat16, float32).
- It serves the default model unless told otherwise, without importing transformers'
  modeling code; other configurations go to the transformers path.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch

from devtools.processes import ServerProcess
from generator.decode.batch import TransformersDecoder
from generator.decode.llama import LlamaDecoder
from generator.settings import Settings, precision_settings
from generator.weights.llama import LlamaConfig
from generator.weights.loaded import load
from streamkit.errors import ModelUnavailable
from support.models import TINY_DECODER, build_tiny
from support.ndjson import parse_ndjson

PROMPTS = [
    [1, 504, 3458, 282, 4649, 314],
    [1, 9690, 28, 905, 2114, 30, 1085, 8161, 4413, 30, 2436, 42, 253, 19, 17, 18, 33, 7],
    [504],
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
]


def _tiny(tmp_path_factory: pytest.TempPathFactory, architecture: str, **config: object) -> Path:
    target = tmp_path_factory.mktemp(f"tiny-{architecture.lower()}")
    return build_tiny(
        target, architecture, max_position_embeddings=256, **{**TINY_DECODER, **config}
    )


TINY_FAMILY = {
    "llama-tied": ("Llama", {"tie_word_embeddings": True}),
    "llama-untied-mha": ("Llama", {"tie_word_embeddings": False, "num_key_value_heads": 2}),
    "mistral-no-window": ("Mistral", {"sliding_window": None}),
    "qwen2-qkv-bias": ("Qwen2", {"use_sliding_window": False}),
}


@pytest.fixture(scope="module", params=sorted(TINY_FAMILY))
def tiny_family_dir(request, tmp_path_factory) -> Path:
    architecture, config = TINY_FAMILY[request.param]
    return _tiny(tmp_path_factory, architecture, **config)


def _both(directory: Path, precision: str = "float32") -> tuple[LlamaDecoder, TransformersDecoder]:
    settings = precision_settings(precision)
    native = load(Settings(model=str(directory), decoder="native", **settings))  # type: ignore[arg-type]
    reference = load(Settings(model=str(directory), decoder="transformers", **settings))  # type: ignore[arg-type]
    assert isinstance(native.decoder, LlamaDecoder)
    assert isinstance(reference.decoder, TransformersDecoder)
    return native.decoder, reference.decoder


def _greedy_logits(decoder, prompt: list[int], steps: int) -> list[torch.Tensor]:
    """The logits of the prefill and of `steps` greedy decode steps, the row alone."""
    logits, cache = decoder.prefill(prompt)
    batch = decoder.open_batch(cache, len(prompt))
    batch.add(cache, len(prompt))
    seen = [logits[0]]
    for _ in range(steps):
        logits = batch.step([int(seen[-1].argmax())])
        seen.append(logits[0])
    return seen


@torch.inference_mode()
def test_the_family_computes_what_transformers_computes(tiny_family_dir: Path) -> None:
    native, reference = _both(tiny_family_dir)
    for prompt in PROMPTS:
        ours = _greedy_logits(native, prompt, 6)
        theirs = _greedy_logits(reference, prompt, 6)
        for mine, expected in zip(ours, theirs, strict=True):
            torch.testing.assert_close(mine, expected, rtol=1e-4, atol=1e-4)
        # Teacher forcing: every position of a whole sequence at once.
        torch.testing.assert_close(
            native.logits(prompt), reference.logits(prompt), rtol=1e-4, atol=1e-4
        )


@pytest.mark.real_model
@torch.inference_mode()
def test_the_default_model_computes_what_transformers_computes(default_model_dir: Path) -> None:
    native, reference = _both(default_model_dir)
    for prompt in PROMPTS[:2]:
        for mine, expected in zip(
            _greedy_logits(native, prompt, 8), _greedy_logits(reference, prompt, 8), strict=True
        ):
            torch.testing.assert_close(mine, expected, rtol=1e-3, atol=1e-3)


def _decode_together(decoder: LlamaDecoder, plan: list[tuple[list[int], int, int]]) -> list:
    """Rows joining at different steps and leaving after different counts, greedy; each
    row's logits at every step, in plan order."""
    batch = decoder.open_batch(None, 0)
    running: list[int] = []  # plan indices, in batch order
    seen: list[list[torch.Tensor]] = [[] for _ in plan]
    step = 0
    while any(len(s) < tokens + 1 for s, (_, _, tokens) in zip(seen, plan, strict=True)):
        for i, (prompt, joins_at, _) in enumerate(plan):
            if joins_at == step:
                logits, cache = decoder.prefill(prompt)
                batch.add(cache, len(prompt))
                running.append(i)
                seen[i].append(logits[0])
        staying = [r for r, i in enumerate(running) if len(seen[i]) < plan[i][2] + 1]
        batch.keep(staying)
        running = [running[r] for r in staying]
        if running:
            logits = batch.step([int(seen[i][-1].argmax()) for i in running])
            for r, i in enumerate(running):
                seen[i].append(logits[r])
        step += 1
    return seen


@pytest.mark.real_model
@pytest.mark.parametrize("precision", ["lowbit", "bfloat16", "float32"])
@torch.inference_mode()
def test_a_batched_row_is_bit_for_bit_the_row_alone(default_model_dir: Path, precision: str):
    from generator.weights.lowbit import cpu_kernels_available

    if precision == "lowbit" and not cpu_kernels_available():
        pytest.skip("this torch build has no low-bit CPU kernels")
    settings = Settings(model=str(default_model_dir), **precision_settings(precision))  # type: ignore[arg-type]
    decoder = load(settings).decoder
    assert isinstance(decoder, LlamaDecoder)
    # (prompt, joins at step, tokens): up to four rows at once, of different lengths,
    # joining while others decode and leaving while others go on.
    plan = [(PROMPTS[0], 0, 12), (PROMPTS[1], 0, 4), (PROMPTS[2], 2, 10), (PROMPTS[3], 3, 6)]
    together = _decode_together(decoder, plan)
    for (prompt, _, tokens), batched in zip(plan, together, strict=True):
        alone = _greedy_logits(decoder, prompt, tokens)
        assert len(batched) == len(alone)
        for step, (mine, expected) in enumerate(zip(batched, alone, strict=True)):
            assert torch.equal(mine, expected), f"{precision}: prompt {prompt[:3]}…, step {step}"


# -- which decoder serves what ----------------------------------------------------------


def test_the_default_model_is_served_natively_without_transformers_modeling_code(
    default_model_dir: Path,
) -> None:
    script = (
        "import sys\n"
        "from generator.settings import Settings\n"
        "from generator.weights.loaded import load\n"
        f"lm = load(Settings(model={str(default_model_dir)!r}))\n"
        "logits, cache = lm.decoder.prefill([1, 2, 3])\n"
        "print(type(lm.decoder).__name__)\n"
        "print(sorted(m for m in sys.modules if m.startswith('transformers.models.')))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    name, modules = result.stdout.splitlines()
    assert name == "LlamaDecoder"
    assert modules == "[]", modules


def test_decoder_transformers_keeps_the_transformers_path(tiny_family_dir: Path) -> None:
    lm = load(Settings(model=str(tiny_family_dir), decoder="transformers"))
    assert isinstance(lm.decoder, TransformersDecoder)


def test_gpt2_goes_to_transformers_and_native_refuses_it(tiny_model_dir: Path) -> None:
    assert isinstance(load(Settings(model=str(tiny_model_dir))).decoder, TransformersDecoder)
    with pytest.raises(ModelUnavailable, match="DECODER=native"):
        load(Settings(model=str(tiny_model_dir), decoder="native"))


@pytest.mark.parametrize(
    "change",
    [
        {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
        {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}},
        {"model_type": "mistral", "sliding_window": 16},
        {"mlp_bias": True},
        {"hidden_act": "gelu"},
        {"model_type": "gpt2"},
    ],
)
def test_configurations_it_does_not_compute_exactly_are_left_to_transformers(
    tmp_path: Path, change: dict
) -> None:
    config = {
        "model_type": "llama",
        "vocab_size": 100,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 64,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert LlamaConfig.read(tmp_path) is not None
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    assert LlamaConfig.read(tmp_path) is None


# -- the same text whatever the traffic, through a real generator process ---------------

SAMPLED = [
    {"prompt": "Write a haiku about the sea.", "chat": True, "max_new_tokens": 40,
     "temperature": 0.9, "top_p": 0.95, "seed": 5},
    {"prompt": "Once upon a time", "max_new_tokens": 48, "temperature": 0},
    {"messages": [{"role": "system", "content": "Answer in one sentence."},
                  {"role": "user", "content": "Why is the sky blue?"}],
     "max_new_tokens": 32, "temperature": 0.7, "top_k": 40, "seed": 11},
    {"prompt": "List three colours:", "max_new_tokens": 24, "temperature": 1.2, "seed": 2,
     "repetition_penalty": 1.2},
]  # fmt: skip


@pytest.mark.real_model
async def test_the_default_configuration_streams_the_same_text_under_concurrent_traffic(
    default_model_dir: Path,
) -> None:
    """The served default (low-bit weights on the native decoder), seeded sampling and
    greedy: each request alone, then all at once and again joined mid-flight, must
    stream the same text token for token."""
    env = {"MODEL": str(default_model_dir), "MAX_CONCURRENCY": "4"}
    with ServerProcess("generator.app:create_app", env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=300) as http:
            alone = [await _tokens(http, body) for body in SAMPLED]
            together = await asyncio.gather(*(_tokens(http, body) for body in SAMPLED))
            staggered = await asyncio.gather(
                *(_tokens(http, body, delay_s=0.15 * i) for i, body in enumerate(SAMPLED))
            )
    for body, solo, batched, joined in zip(SAMPLED, alone, together, staggered, strict=True):
        assert len(solo) > 3, body
        assert batched == solo, body
        assert joined == solo, body


async def _tokens(http: httpx.AsyncClient, body: dict, delay_s: float = 0.0) -> list[str]:
    await asyncio.sleep(delay_s)
    response = await http.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    events = parse_ndjson(response.text)
    assert events[-1]["type"] == "done", events[-1]
    return [e["text"] for e in events if e["type"] == "token"]


@pytest.mark.real_model
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@torch.inference_mode()
def test_full_precisions_come_from_the_low_bit_file_alone(
    tmp_path: Path, default_model_dir: Path, precision: str
) -> None:
    """An image carries the low-bit file only: a DTYPE served from it computes exactly
    what the full weights compute (the 4-bit blocks are the GGUF's own)."""
    lean = tmp_path / "lean"
    lean.mkdir()
    for item in default_model_dir.iterdir():
        if item.name != "model.safetensors":
            (lean / item.name).symlink_to(item)
    settings = precision_settings(precision)
    full = load(Settings(model=str(default_model_dir), **settings)).decoder  # type: ignore[arg-type]
    expanded = load(Settings(model=str(lean), **settings)).decoder  # type: ignore[arg-type]
    assert isinstance(expanded, LlamaDecoder)
    for prompt in PROMPTS[:2]:
        assert torch.equal(expanded.logits(prompt), full.logits(prompt))
