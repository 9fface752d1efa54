"""The short loading path (`generator.weights.checkpoint`) builds exactly what
`from_pretrained` builds, maps stored weights instead of copying them, and steps aside
for checkpoints it can't read."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from generator.weights.checkpoint import (
    WEIGHTS_FILE,
    causal_lm_class,
    read_causal_lm,
)


def _reference(directory: Path, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).eval()


def _assert_same_model(model: Any, reference: Any) -> None:
    assert type(model) is type(reference)
    assert not model.training
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        assert value.dtype == theirs[key].dtype, key
        assert torch.equal(value, theirs[key]), key
    buffers, reference_buffers = dict(model.named_buffers()), dict(reference.named_buffers())
    assert buffers.keys() == reference_buffers.keys()
    for key, value in buffers.items():
        assert value.dtype == reference_buffers[key].dtype, key
        assert torch.equal(value, reference_buffers[key]), key
    if model.config.tie_word_embeddings:
        head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
        assert head.weight.data_ptr() == embeddings.weight.data_ptr()
    assert model.config.to_dict() == reference.config.to_dict()
    assert model.generation_config.to_dict() == reference.generation_config.to_dict()
    ids = torch.tensor([[1, 5, 42, 7, 300, 2]])
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids).logits, reference(input_ids=ids).logits)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_short_path_builds_what_from_pretrained_builds(tiny_model_dir: Path, dtype) -> None:
    # The tiny GPT-2 is stored in float32: bfloat16 exercises converting while loading.
    assert causal_lm_class(tiny_model_dir) is not None, "the short path should apply"
    _assert_same_model(
        read_causal_lm(str(tiny_model_dir), dtype), _reference(tiny_model_dir, dtype)
    )


def test_checkpoint_with_other_names_goes_through_from_pretrained(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An older GPT-2 layout (no `transformer.` prefix, no separate head) is one that
    from_pretrained renames; the short path must notice and hand it over."""
    directory = tmp_path / "old-layout"
    shutil.copytree(tiny_model_dir, directory)
    state = load_file(directory / WEIGHTS_FILE)
    renamed = {k.removeprefix("transformer."): v for k, v in state.items() if k != "lm_head.weight"}
    assert renamed.keys() != state.keys()
    save_file(renamed, directory / WEIGHTS_FILE, metadata={"format": "pt"})

    with caplog.at_level(logging.INFO, logger="generator.loading"):
        model = read_causal_lm(str(directory), torch.float32)
    assert "loading with from_pretrained" in caplog.text
    _assert_same_model(model, _reference(directory, torch.float32))
    original = _reference(tiny_model_dir, torch.float32).state_dict()
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())


def test_directories_the_short_path_does_not_take(tiny_model_dir: Path, tmp_path: Path) -> None:
    quantized = tmp_path / "quantized"
    shutil.copytree(tiny_model_dir, quantized)
    config = (quantized / "config.json").read_text()
    (quantized / "config.json").write_text(
        config.replace("{", '{"quantization_config": {"quant_method": "x"},', 1)
    )
    assert causal_lm_class(quantized) is None
    sharded = tmp_path / "sharded"
    shutil.copytree(tiny_model_dir, sharded)
    (sharded / WEIGHTS_FILE).rename(sharded / "model-00001-of-00001.safetensors")
    assert causal_lm_class(sharded) is None


def _rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.real_model
def test_default_model_weights_are_mapped_not_copied(default_model_dir: Path) -> None:
    """The prepared weights are stored in bfloat16 (the default precision here), so the
    model's parameters are the file's pages: loading allocates almost nothing, where a
    converted copy would be ~270 MB."""
    before = _rss_anon_mb()
    model = read_causal_lm(str(default_model_dir), torch.bfloat16)
    with torch.inference_mode():
        model(input_ids=torch.tensor([[1, 2, 3]]))
    grown = _rss_anon_mb() - before
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert grown < 100, f"loading allocated {grown:.0f} MB of anonymous memory"


@pytest.mark.real_model
def test_default_model_loads_like_from_pretrained(default_model_dir: Path) -> None:
    assert causal_lm_class(default_model_dir) is not None
    for dtype in (torch.bfloat16, torch.float32):  # float32: upcast from the stored bfloat16
        model = read_causal_lm(str(default_model_dir), dtype)
        _assert_same_model(model, _reference(default_model_dir, dtype))
        del model
