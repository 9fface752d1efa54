"""What every measurement runs: the same prompt, length and greedy decoding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# ~20 tokens of plain text (no chat template) whose greedy continuation runs past 128
# tokens without an end-of-sequence, so every run decodes the same number of tokens.
DEFAULT_PROMPT = (
    "The old lighthouse keeper climbed the stairs at dusk, and as the storm rolled in "
    "over the harbour he"
)


@dataclass(frozen=True)
class Workload:
    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = 128
    runs: int = 5

    def body(self, max_new_tokens: int | None = None) -> dict[str, Any]:
        """The request (generator JSON body, or gateway query) for one greedy generation."""
        return {
            "prompt": self.prompt,
            "max_new_tokens": max_new_tokens or self.max_new_tokens,
            "temperature": 0,
        }
