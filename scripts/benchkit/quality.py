"""The quality gate's numbers for each benchmarked precision (`generator.prepare.quality`)."""

from __future__ import annotations

from typing import Any


def measure_quality(dtypes: list[str]) -> dict[str, Any]:
    from generator.prepare.quality import GATE, compare, load_for_gate, score
    from generator.settings import Settings

    model = Settings().model
    reference = score(*load_for_gate(model, "float32"))
    results: dict[str, Any] = {
        "gate": {
            "max_perplexity_ratio": GATE.max_perplexity_ratio,
            "min_top1_agreement": GATE.min_top1_agreement,
        }
    }
    for dtype in dtypes:
        result = compare(reference, score(*load_for_gate(model, dtype)))
        results[dtype] = {
            "perplexity": result.perplexity,
            "perplexity_ratio": result.perplexity_ratio,
            "top1_agreement": result.top1_agreement,
            "passes": result.passes(),
            "tokens": reference.tokens,
        }
    return results
