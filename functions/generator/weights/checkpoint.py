"""Reading a checkpoint into model and tokenizer objects, with a short path for plain directories.

A cold start is mostly spent importing and constructing, so for a local directory in the
standard layout (one `model.safetensors`, one `*ForCausalLM` architecture, a `tokenizers`
tokenizer) this imports only that architecture's module and builds the objects directly:

- the model class comes from `transformers.models.<type>.modeling_<type>`, not from the
  `Auto*` registries, whose first use imports and builds mappings for every architecture;
- the module is built without random initialisation and then takes the checkpoint's
  tensors as its parameters (`load_state_dict(assign=True)`): stored in the served
  precision, they stay memory-mapped from the file (no copy, nothing resident until used).
  `from_pretrained` would give the same weights, but first compiles renaming rules for
  every architecture (~0.4 s of CPU here);
- the tokenizer is `tokenizers`' own, read without transformers
  (`generator.weights.tokenizer.PlainTokenizer`).

Anything else (a hub id, sharded or quantized checkpoints, custom code, renamed keys, an
architecture this can't resolve) goes through the generic `Auto*.from_pretrained` path.
`tests/generator/test_loading.py` checks both paths give the same model.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import torch

from generator.weights.jsonfile import read_object
from generator.weights.tokenizer import PlainTokenizer

log = logging.getLogger("generator.loading")  # the name its log lines have always carried

WEIGHTS_FILE = "model.safetensors"
# How transformers names causal-LM heads ("LMHeadModel": GPT-2 and its generation).
_CAUSAL_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def read_tokenizer(model: str) -> Any:
    """A plain local directory's tokenizer without transformers
    (`generator.weights.tokenizer`); anything else through `AutoTokenizer`."""
    directory = _local_dir(model)
    if directory is not None:
        plain = PlainTokenizer.read(directory)
        if plain is not None:
            return plain
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def read_causal_lm(model: str, dtype: torch.dtype) -> Any:
    directory = _local_dir(model)
    model_class = causal_lm_class(directory) if directory is not None else None
    if directory is not None and model_class is not None:
        loaded = _load_direct(model_class, directory, dtype)
        if loaded is not None:
            return loaded
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model, dtype=dtype)


def _local_dir(model: str) -> Path | None:
    path = Path(model).expanduser()
    return path if path.is_dir() else None


def causal_lm_class(directory: Path) -> Any | None:
    """The causal-LM class the directory's config names, when the short path applies."""
    config = read_object(directory / "config.json")
    architectures = config.get("architectures") or []
    model_type = config.get("model_type")
    if (
        not (directory / WEIGHTS_FILE).is_file()
        or len(architectures) != 1
        or not str(architectures[0]).endswith(_CAUSAL_LM_SUFFIXES)
        or not isinstance(model_type, str)
        or "quantization_config" in config
        or "auto_map" in config  # custom code: only the Auto classes know how to load it
    ):
        return None
    module_name = model_type.replace("-", "_")
    try:
        module = importlib.import_module(
            f"transformers.models.{module_name}.modeling_{module_name}"
        )
    except ImportError:
        return None
    model_class = getattr(module, architectures[0], None)
    keeps_float32 = getattr(model_class, "_keep_in_fp32_modules", None) or getattr(
        model_class, "_keep_in_fp32_modules_strict", None
    )
    if model_class is None or keeps_float32:
        return None  # mixed-precision models: let from_pretrained place each dtype
    return model_class


def _load_direct(model_class: Any, directory: Path, dtype: torch.dtype) -> Any | None:
    """Build `model_class` from the directory, its parameters being the checkpoint's tensors.

    Tensors already in `dtype` stay views of the memory-mapped file. Otherwise each is
    read (not mapped) and converted one at a time, so the stored copy never sits in
    memory next to the converted one. Returns None if the checkpoint's names don't
    match the class (an older layout that `from_pretrained` would rename)."""
    model = skeleton(model_class, directory, dtype)
    state = _read_weights(directory / WEIGHTS_FILE, dtype)
    result = model.load_state_dict(state, strict=False, assign=True)
    del state
    tied = set(model.all_tied_weights_keys)
    if result.unexpected_keys or set(result.missing_keys) - tied:
        missing, unexpected = len(result.missing_keys), len(result.unexpected_keys)
        log.info(
            "checkpoint names differ from the class; loading with from_pretrained",
            extra={"fields": {"missing": missing, "unexpected": unexpected}},
        )
        return None
    model.tie_weights()
    return model.eval()


def skeleton(model_class: Any, directory: Path, dtype: torch.dtype) -> Any:
    """`model_class` built from the directory's configs, its weights left uninitialised
    (allocated, never written: the caller assigns the real tensors)."""
    from transformers import GenerationConfig
    from transformers.initialization import no_init_weights

    config = model_class.config_class.from_pretrained(str(directory))
    with no_init_weights():
        model = model_class._from_config(config, dtype=dtype)
    model.config.name_or_path = str(directory)
    if (directory / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(directory))
    return model


def _read_weights(path: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", backend="mmap") as mapped:
        keys = list(mapped.keys())
        if all(_fits(mapped.get_slice(key).get_dtype(), dtype) for key in keys):
            return {key: mapped.get_tensor(key) for key in keys}
    state = {}
    with safe_open(str(path), framework="pt", backend="pread") as reader:
        for key in reader.keys():  # noqa: SIM118 (safe_open is no dict)
            tensor = reader.get_tensor(key)
            state[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    return state


def _fits(stored: str, dtype: torch.dtype) -> bool:
    """Whether a stored tensor (safetensors dtype name: BF16, F32, I64...) can be used as
    it is: the same floating-point type, or not a floating-point type at all."""
    is_float = stored.startswith(("F", "BF"))
    return not is_float or _SAFETENSORS_FLOATS.get(stored) == dtype


_SAFETENSORS_FLOATS = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
}
