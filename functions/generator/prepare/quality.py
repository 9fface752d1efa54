"""The quality gate: how far a cheaper copy of a model drifts from its float32 self.

A lower precision (bfloat16, or later int8/int4 weights) is only worth its speed if
the model still says the same things. Two numbers, measured teacher-forced on a
few fixed texts embedded here, answer that:

- perplexity of the texts under each copy (how well it predicts real text), and
- top-1 agreement: at how many positions the candidate's most likely next token is
  the float32 model's most likely next token (greedy decoding follows exactly these).

`GATE` holds the tolerances; `tests/perf/test_quality_gate.py` enforces them for
bfloat16 and shows that naive dynamic int8 fails them. Nothing on the serving path
imports this module. Run it by hand:
`PYTHONPATH=functions .venv/bin/python -m generator.prepare.quality --int8-dynamic`.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch

if TYPE_CHECKING:
    from generator.decode.decoder import Decoder

# Short original passages of different kinds (narrative, technical, instructions,
# dialogue, facts, code), so the gate does not hinge on one style of text.
QUALITY_TEXTS: tuple[str, ...] = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk. From the top "
    "he could see the fishing boats returning to the harbour, their lamps swinging in the "
    "swell. He wrote the weather in a worn notebook: wind from the west, light rain, "
    "visibility good. Nobody had read the notebook in years, but he kept writing anyway.",
    "A hash table stores values in an array of buckets. To insert a key, the table "
    "computes a hash of the key and uses it to pick a bucket. When two keys land in the "
    "same bucket, the table resolves the collision, for example by keeping a short list "
    "in each bucket. Lookups are fast on average because only one bucket is searched.",
    "To make bread, mix four cups of flour with a teaspoon of salt and a packet of yeast. "
    "Add warm water slowly and knead the dough for ten minutes until it is smooth. Leave "
    "it in a covered bowl until it doubles in size, then shape it into a loaf and bake it "
    "in a hot oven for about forty minutes.",
    "Customer: Hello, I ordered a blue jacket last week but it has not arrived yet.\n"
    "Assistant: I am sorry to hear that. Could you give me your order number, please?\n"
    "Customer: Yes, it is 48213.\n"
    "Assistant: Thank you. Your jacket was shipped on Monday and should arrive tomorrow.",
    "Water boils at one hundred degrees Celsius at sea level. At higher altitudes the air "
    "pressure is lower, so water boils at a lower temperature. This is why cooking pasta "
    "in the mountains takes longer: the water is not as hot, even though it is boiling.",
    "def fibonacci(n):\n"
    '    """Return the n-th Fibonacci number."""\n'
    "    a, b = 0, 1\n"
    "    for _ in range(n):\n"
    "        a, b = b, a + b\n"
    "    return a\n\n"
    "print([fibonacci(i) for i in range(10)])\n",
)


@dataclass(frozen=True)
class Gate:
    """Tolerances a candidate must meet against the float32 reference."""

    max_perplexity_ratio: float
    min_top1_agreement: float


# On the default model and these texts bfloat16 measures 1.004x perplexity and 96.9 %
# agreement (float16: 1.000x, 99.5 %); naive dynamic int8 measures ~4x and ~40 %.
GATE = Gate(max_perplexity_ratio=1.02, min_top1_agreement=0.90)


@dataclass(frozen=True)
class Scores:
    """One model copy's predictions over the fixed texts."""

    nll_sum: float
    tokens: int
    top1: torch.Tensor  # argmax next-token id at every scored position, texts concatenated

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_sum / self.tokens)


@dataclass(frozen=True)
class Comparison:
    reference_perplexity: float
    perplexity: float
    top1_agreement: float

    @property
    def perplexity_ratio(self) -> float:
        return self.perplexity / self.reference_perplexity

    def passes(self, gate: Gate = GATE) -> bool:
        return (
            self.perplexity_ratio <= gate.max_perplexity_ratio
            and self.top1_agreement >= gate.min_top1_agreement
        )


@torch.inference_mode()
def score(decoder: Decoder, tokenizer: Any, texts: tuple[str, ...] = QUALITY_TEXTS) -> Scores:
    """Teacher-forced negative log-likelihood and top-1 predictions over `texts`."""
    nll_sum, tokens, predictions = 0.0, 0, []
    for text in texts:
        ids = [int(i) for i in tokenizer(text)["input_ids"]]
        logits = decoder.logits(ids)[:-1].float()
        targets = torch.tensor(ids[1:], device=logits.device)
        nll_sum += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
        tokens += int(targets.numel())
        predictions.append(logits.argmax(dim=-1).cpu())
    return Scores(nll_sum=nll_sum, tokens=tokens, top1=torch.cat(predictions))


def compare(reference: Scores, candidate: Scores) -> Comparison:
    agreement = float((reference.top1 == candidate.top1).float().mean())
    return Comparison(
        reference_perplexity=reference.perplexity,
        perplexity=candidate.perplexity,
        top1_agreement=agreement,
    )


def load_for_gate(model: str, precision: str, decoder: str = "auto") -> tuple[Decoder, Any]:
    """The decoder and tokenizer loaded exactly as the generator loads them, in one
    precision: a dtype name, or `lowbit` (`generator.settings.precision_settings`)."""
    from generator.settings import Settings, precision_settings
    from generator.weights.loaded import load

    settings = Settings(model=model, decoder=decoder, **precision_settings(precision))  # type: ignore[arg-type]
    lm = load(settings)
    return lm.decoder, lm.tokenizer


def int8_dynamic(model: str) -> Decoder:
    """Naive dynamic int8 (weights and activations) of every nn.Linear of the float32
    model (transformers' modeling code): the negative control."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    from generator.decode.batch import TransformersDecoder

    reference, _ = load_for_gate(model, "float32", decoder="transformers")
    float32 = cast(TransformersDecoder, reference).model
    quantize: Any = quantize_dynamic  # untyped upstream
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own deprecation notice for this API
        quantized = quantize(float32, {torch.nn.Linear}, dtype=torch.qint8)
    return TransformersDecoder(quantized, "cpu")


def main(argv: list[str] | None = None) -> None:
    from generator.settings import default_model_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default=str(default_model_dir()))
    parser.add_argument(
        "--dtype", action="append", help="candidate dtype(s) or lowbit; default bfloat16, lowbit"
    )
    parser.add_argument("--int8-dynamic", action="store_true", help="also score naive int8")
    args = parser.parse_args(argv)

    reference_decoder, tokenizer = load_for_gate(args.model, "float32")
    reference = score(reference_decoder, tokenizer)
    print(f"{'candidate':14}{'perplexity':>12}{'ratio':>8}{'top-1 agree':>13}  gate")
    print(f"{'float32':14}{reference.perplexity:>12.4f}{1:>8.3f}{1:>13.3f}  reference")
    candidates: list[tuple[str, Decoder]] = []
    for dtype in args.dtype or ["bfloat16", "lowbit"]:
        candidates.append((dtype, load_for_gate(args.model, dtype)[0]))
    if args.int8_dynamic:
        candidates.append(("int8-dynamic", int8_dynamic(args.model)))
    for name, decoder in candidates:
        result = compare(reference, score(decoder, tokenizer))
        verdict = "pass" if result.passes() else "FAIL"
        print(
            f"{name:14}{result.perplexity:>12.4f}{result.perplexity_ratio:>8.3f}"
            f"{result.top1_agreement:>13.3f}  {verdict}"
        )


if __name__ == "__main__":
    main()
