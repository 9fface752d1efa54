"""Both images, built for real and run as containers with podman.

- the images hold what they should: the generator the converted model and an offline
  hub; the gateway neither torch nor transformers;
- the `stream` containers (`make docker-up`) stream tokens: browser-style SSE from the
  gateway container, fed by the generator container, from a cold start;
- the `lambda` targets' Mangum handlers answer real Lambda events inside their images.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from support.containers import Stack, image_env, inspect, run_python, wait_until_listening
from support.lambda_events import LambdaResponse, decode_response, lambda_event

pytestmark = pytest.mark.container


def test_generator_image_contents(built_images: dict[str, str]) -> None:
    for name in ("generator", "generator-lambda"):
        config = inspect(built_images[name])["Config"]
        env = image_env(built_images[name])
        assert env["MODEL"] == "/opt/model"
        assert env["HF_HUB_OFFLINE"] == "1"
        assert env["HF_HOME"].startswith("/tmp")
        assert config["User"] == "1000:1000"
        assert config["Labels"]["org.opencontainers.image.title"] == "generator"
    env = image_env(built_images["generator"])
    assert env["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert env["AWS_LWA_READINESS_CHECK_PATH"] == "/readyz"
    assert env["AWS_LWA_ASYNC_INIT"] == "true"
    assert env["PORT"] == "8080"
    assert inspect(built_images["generator-lambda"])["Config"]["Cmd"] == [
        "generator.handler.handler"
    ]
    # The model is converted already (readable by the unprivileged user),
    # and the adapter extension is in place.
    listing = run_python(
        built_images["generator"],
        "import json, os; from importlib.util import find_spec;"
        " print(json.dumps({'model': sorted(os.listdir('/opt/model')),"
        " 'adapter': os.access('/opt/extensions/lambda-adapter', os.X_OK),"
        " 'readable': os.access('/opt/model/lowbit.safetensors', os.R_OK),"
        " 'rooms': sorted(n for n in os.listdir(os.path.dirname(find_spec('generator').origin))"
        " if not n.startswith('__') and not n.endswith('.py'))}))",
    )
    found = json.loads(listing)
    # One weight file: the low-bit one serves every precision (expanded at start).
    assert "lowbit.safetensors" in found["model"]
    assert "model.safetensors" not in found["model"]
    assert not any(name.endswith(".gguf") for name in found["model"])
    assert found["adapter"]
    assert found["readable"]
    # What serving runs, and nothing that only prepares the model at build time.
    assert found["rooms"] == ["decode", "requirements.txt", "serving", "weights"]


def test_gateway_image_has_no_torch_or_transformers(
    built_images: dict[str, str], measured: dict[str, Any]
) -> None:
    for name in ("gateway", "gateway-lambda"):
        missing = run_python(
            built_images[name],
            "import importlib.util as u;"
            " print([m for m in ('torch', 'transformers', 'fastapi', 'sse_starlette')"
            " if u.find_spec(m) is None])",
        )
        assert missing.strip() == "['torch', 'transformers']"
    env = image_env(built_images["gateway"])
    assert env["AWS_LWA_READINESS_CHECK_PATH"] == "/healthz"
    assert "AWS_LWA_ASYNC_INIT" not in env
    assert inspect(built_images["gateway-lambda"])["Config"]["Cmd"] == ["gateway.handler.handler"]
    sizes = measured["size_mb"]
    assert sizes["gateway"] < sizes["generator"] / 4


@pytest.fixture(scope="module")
def cold_stream(stack: Stack, measured: dict[str, Any]) -> dict[str, Any]:
    """The first generation through the gateway container, asked for as soon as the
    generator container listens (its model may still be loading): SSE events and
    the time from `docker-up` to the first token."""
    wait_until_listening(stack.generator_url + "/healthz")
    events: list[tuple[str, dict[str, Any]]] = []
    first_token_at = None
    params = {"prompt": "The capital of France is", "max_new_tokens": "12", "temperature": "0"}
    with (
        httpx.Client(base_url=stack.gateway_url, timeout=300) as client,
        connect_sse(client, "GET", "/generate", params=params) as source,
    ):
        assert source.response.status_code == 200
        for sse in source.iter_sse():
            if not sse.data:
                continue  # a `: ping` comment (httpx-sse hands it over as an empty event)
            if sse.event == "token" and first_token_at is None:
                first_token_at = time.monotonic()
            events.append((sse.event, json.loads(sse.data)))
    assert first_token_at is not None, events
    measured["cold_start_to_first_token_s"] = round(first_token_at - stack.started_at, 2)
    measured["cold_start_status_events"] = [data for kind, data in events if kind == "status"]
    return {"events": events}


def test_stream_containers_stream_tokens(stack: Stack, cold_stream: dict[str, Any]) -> None:
    events = cold_stream["events"]
    kinds = [kind for kind, _ in events]
    first_token = kinds.index("token")
    assert set(kinds[:first_token]) <= {"status"}  # loading / queued, before any token
    assert kinds[first_token:] == ["token"] * 12 + ["done"], kinds
    done = events[-1][1]
    assert done["finish_reason"] == "length"
    assert done["usage"]["completion_tokens"] == 12
    text = "".join(data["text"] for kind, data in events if kind == "token")
    # The same generation straight from the generator container, in one piece.
    direct = httpx.get(
        stack.generator_url + "/",
        params={"prompt": "The capital of France is", "max_new_tokens": 12, "temperature": 0},
        timeout=300,
    )
    assert direct.status_code == 200
    assert direct.text == text
    assert "Paris" in text  # the real SmolLM2, converted at build time


def test_stack_health_cors_and_page(stack: Stack, cold_stream: dict[str, Any]) -> None:
    ready = httpx.get(stack.gateway_url + "/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    assert ready.json()["generator"]["status"] == "ready"
    origin = stack.page_url.replace("127.0.0.1", "localhost")
    preflight = httpx.options(
        stack.gateway_url + "/start",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        timeout=30,
    )
    assert preflight.headers.get("access-control-allow-origin") == origin
    # The page calls the gateway on the host name it was opened with, on GATEWAY_PORT.
    config = httpx.get(stack.page_url + "/config.js", timeout=30)
    gateway_port = stack.gateway_url.rsplit(":", 1)[1]
    assert f'location.hostname + ":{gateway_port}"' in config.text
    page = httpx.get(stack.page_url + "/", timeout=30)
    assert page.status_code == 200
    assert "config.js" in page.text
    # The image's model is listed by its name, not by its directory (/opt/model).
    models = httpx.get(stack.gateway_url + "/v1/models", timeout=30).json()
    assert [m["id"] for m in models["data"]] == ["SmolLM2-135M-Instruct"]
    bad = httpx.get(stack.gateway_url + "/generate", params={"prompt": ""}, timeout=30)
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "prompt"


LAMBDA_SCRIPT = """
import importlib, json, sys
module, _, attr = sys.argv[1].rpartition(".")
handler = getattr(importlib.import_module(module), attr)

class Context:
    function_name = "container-test"
    aws_request_id = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    def get_remaining_time_in_millis(self):
        return 300000

print("RESPONSE " + json.dumps(handler(json.load(sys.stdin), Context())))
"""


def invoke_in_container(image: str, event: dict[str, Any], *extra: str) -> LambdaResponse:
    """The image's CMD (module.handler) called with `event`, inside the image."""
    handler_path = inspect(image)["Config"]["Cmd"][0]
    output = run_python(image, LAMBDA_SCRIPT, handler_path, extra=extra, stdin=json.dumps(event))
    line = next(line for line in output.splitlines() if line.startswith("RESPONSE "))
    return decode_response(json.loads(line.removeprefix("RESPONSE ")))


def test_generator_lambda_target_handler(built_images: dict[str, str]) -> None:
    event = lambda_event(
        "apigw-rest-v1", "POST", "/v1/generate",
        body={"prompt": "Hello", "max_new_tokens": 5, "temperature": 0},
    )  # fmt: skip
    response = invoke_in_container(built_images["generator-lambda"], event)
    assert response.status == 200, response.body
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.body.splitlines()]
    assert [line["type"] for line in lines] == ["token"] * 5 + ["done"]


def test_gateway_lambda_target_handler(built_images: dict[str, str], stack: Stack) -> None:
    """The gateway's Mangum handler, in its image, calling the generator container."""
    event = lambda_event(
        "function-url", "GET", "/generate",
        query={"prompt": "Hello", "max_new_tokens": "5", "temperature": "0"},
    )  # fmt: skip
    network = ["--network", stack.network, "-e", f"GENERATOR_URL={stack.generator_in_network}"]
    response = invoke_in_container(built_images["gateway-lambda"], event, *network)
    assert response.status == 200, response.body
    assert response.headers["content-type"].startswith("text/event-stream")
    kinds = [line.removeprefix("event: ") for line in response.body.splitlines()
             if line.startswith("event: ")]  # fmt: skip
    while kinds and kinds[0] == "status":
        kinds.pop(0)
    assert kinds == ["token"] * 5 + ["done"], response.body
