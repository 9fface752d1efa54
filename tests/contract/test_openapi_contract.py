"""Both OpenAPI documents tell the truth: schemathesis generates requests from each (valid
ones, and invalid ones for every constraint), sends them to the real processes and runs
every check it has: each answer's status, content type, headers and body are documented;
every schema-valid request is accepted and every schema-violating one refused; 405s carry
`Allow`; `/v1/*` refuses a request without its API key.

The processes run with limits small enough that any request their documents allow is one
the model can serve: a tiny GPT-2 with a 4096-position context, and at most 4 turns of
100 characters (4 bytes each at worst: 1600 byte-level tokens) and 4 new tokens.

What a document cannot say is supplied the way a real client gets it: a start id is
signed (the document gives its shape; a random string of that shape is not one), so a
generated id is swapped for one this gateway issued; `/v1/*` requests carry the key.
And JSON Schema has no sums: a chat message's text parts are joined into one turn, and
leading system messages into one, each turn within MAX_PROMPT_CHARS (the document says
so in words); cases whose joined turns are longer are left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, assume, settings
from schemathesis import Case

from devtools.processes import ServerProcess
from gateway.app import create_app as create_gateway
from gateway.settings import Settings as GatewaySettings
from gateway.signing import ID_SCHEMA, StartIdSigner
from generator.app import create_app as create_generator
from generator.settings import Settings as GeneratorSettings
from support.gateway import API_KEY, SECRET, gateway_process
from support.models import build_tiny_gpt2

LIMITS: dict[str, Any] = {"max_prompt_chars": 100, "max_messages": 4, "max_new_tokens_limit": 4}
GATEWAY = {**LIMITS, "api_keys": API_KEY, "start_secret": SECRET}
GENERATOR = {**LIMITS, "default_max_new_tokens": 4}

# The documents, as these settings make them (a test below checks that the processes,
# started with the same settings, serve exactly these).
GATEWAY_DOCUMENT = create_gateway(
    GatewaySettings(generator_url="http://unused", **GATEWAY)
).openapi()
GENERATOR_DOCUMENT = create_generator(GeneratorSettings(model="unused", **GENERATOR)).openapi()
gateway_schema = schemathesis.openapi.from_dict(GATEWAY_DOCUMENT)
generator_schema = schemathesis.openapi.from_dict(GENERATOR_DOCUMENT)

# Bounded: a couple of dozen cases per operation keep the suite to a few minutes.
BOUNDED = settings(
    max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
ID_SHAPE = re.compile(ID_SCHEMA["pattern"])
SIGNER = StartIdSigner(SECRET.encode(), ttl_s=300)


def environment(settings: dict[str, Any]) -> dict[str, str]:
    return {name.upper(): str(value) for name, value in settings.items()}


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    model = build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2-4k"), context=4096)
    env = {"MODEL": str(model), **environment(GENERATOR)}
    with ServerProcess("generator.app:create_app", env) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(generator: ServerProcess) -> Iterator[ServerProcess]:
    with gateway_process(generator.url, **environment(GATEWAY)) as server:
        yield server


@pytest.mark.parametrize(
    ("process", "document"), [("gateway", GATEWAY_DOCUMENT), ("generator", GENERATOR_DOCUMENT)]
)
def test_the_processes_serve_these_documents(
    process: str, document: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    server: ServerProcess = request.getfixturevalue(process)
    assert httpx.get(server.url + "/openapi.json").json() == document


@generator_schema.parametrize()
@BOUNDED
def test_the_generator_does_what_its_document_says(case: Case, generator: ServerProcess) -> None:
    case.call_and_validate(base_url=generator.url)


@gateway_schema.parametrize()
@BOUNDED
def test_the_gateway_does_what_its_document_says(case: Case, gateway: ServerProcess) -> None:
    if "Authorization" in (case.headers or {}):  # not when a case leaves it out on purpose
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {API_KEY}"}
    start_id = (case.query or {}).get("id")
    if isinstance(start_id, str) and ID_SHAPE.match(start_id):
        case.query = {**(case.query or {}), "id": SIGNER.issue({"prompt": "Once upon"})}
    assume(turns_within_limit(case.body))
    case.call_and_validate(base_url=gateway.url)


def turns_within_limit(body: object) -> bool:
    """Whether a chat body's turns, once joined as the gateway joins them, are within the
    limit (any other body: yes)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return True
    turns: list[tuple[str, int]] = []
    for message in messages:
        if not isinstance(message, dict):
            return True
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"text": content}]
        length = sum(
            len(p["text"]) for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
        role = "system" if message.get("role") in ("system", "developer") else "other"
        if role == "system" and turns and all(r == "system" for r, _ in turns):
            turns[0] = ("system", turns[0][1] + len("\n\n") + length)
        else:
            turns.append((role, length))
    return all(length <= LIMITS["max_prompt_chars"] for _, length in turns)
