"""AWS Lambda entry point (API Gateway / ALB / Function URL in BUFFERED mode) via Mangum.

Mangum buffers the whole event stream before returning it: correct, not streamed.
For token streaming use the image's Lambda Web Adapter target (RESPONSE_STREAM).
The lifespan is off because Mangum would run it per invocation, closing the shared
generator client; the client lives as long as the execution environment.
"""

from __future__ import annotations

from mangum import Mangum

from gateway.app import create_app

app = create_app()
handler = Mangum(app, lifespan="off")
