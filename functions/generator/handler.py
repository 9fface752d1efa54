"""AWS Lambda entry point (API Gateway / ALB / Function URL in BUFFERED mode) via Mangum.

Mangum buffers the whole NDJSON body before returning it: correct, not streamed.
For token streaming use the image's `stream` target (Lambda Web Adapter). The model
loads here, at import, so it happens during Lambda's init phase, not per request.
"""

from __future__ import annotations

from mangum import Mangum
from mangum.adapter import DEFAULT_TEXT_MIME_TYPES

from generator.app import create_app
from generator.metrics import GeneratorMetrics
from generator.serving.engine import Engine
from generator.settings import Settings

settings = Settings()
engine = Engine(settings, GeneratorMetrics())
engine.load()
app = create_app(settings, engine)
# NDJSON is text: without this Mangum base64-encodes it, which API Gateway REST passes
# to clients as base64 unless the API declares binary media types.
handler = Mangum(
    app, lifespan="off", text_mime_types=[*DEFAULT_TEXT_MIME_TYPES, "application/x-ndjson"]
)
