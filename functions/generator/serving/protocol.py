"""The generator's request: the body of `POST /v1/generate` and its operator-tuned bounds.

The request schema is shared with the gateway (`streamkit.generation`), and so are the
events the generator streams back (`streamkit.events`); bounds an operator tunes
(prompt length, max_new_tokens) are checked against `Settings`.
"""

from __future__ import annotations

from generator.settings import Settings
from streamkit.generation import GenerationParams, check_limits

# The request body of `POST /v1/generate` is the schema both functions share.
GenerateRequest = GenerationParams


def effective_max_new_tokens(request: GenerateRequest, settings: Settings) -> int:
    """Check the operator-tuned bounds; return the `max_new_tokens` to use."""
    check_limits(request, settings)
    return request.max_new_tokens or settings.default_max_new_tokens
