#!/usr/bin/env bash
# Regenerate the Lambda event fixtures with the AWS SAM CLI (offline). Not part of
# `make test`: the JSON files are committed, so tests never need SAM.
#
#   python3 -m venv /tmp/sam && /tmp/sam/bin/pip install aws-sam-cli
#   SAM=/tmp/sam/bin/sam tests/lambda/events/generate.sh
#
# SAM has no Function URL generator; a Function URL request uses the HTTP API v2.0
# payload with its own requestContext (url-id domain, `$default` route and stage, an
# IAM authorizer for AWS_IAM auth), so that file is derived from the v2 event.
# Tests adapt method, path, query, headers and body per request (support/lambda_events.py).
set -euo pipefail
cd "$(dirname "$0")"
SAM="${SAM:-sam}"
export SAM_CLI_TELEMETRY=0
"$SAM" local generate-event apigateway aws-proxy --method POST --path v1/generate --body '{}' \
    >apigw-rest-v1.json
"$SAM" local generate-event apigateway http-api-proxy --method POST --path v1/generate --body '{}' \
    >apigw-http-v2.json
"$SAM" local generate-event alb request --method POST --path v1/generate --body '{}' >alb.json
python3 - <<'PY'
import json

event = json.load(open("apigw-http-v2.json"))
url_id = "abcdefghijklmnopqrstuvwxyz012345"
context = event["requestContext"]
context.pop("authentication", None)
context["apiId"] = url_id
context["domainName"] = f"{url_id}.lambda-url.us-east-1.on.aws"
context["domainPrefix"] = url_id
context["authorizer"] = {
    "iam": {
        "accessKey": "AKIAIOSFODNN7EXAMPLE",
        "accountId": "123456789012",
        "callerId": "AIDACKCEVSQ6C2EXAMPLE",
        "cognitoIdentity": None,
        "principalOrgId": None,
        "userArn": "arn:aws:iam::123456789012:user/example",
        "userId": "AIDACKCEVSQ6C2EXAMPLE",
    }
}
event["headers"] = {**event["headers"], "host": context["domainName"]}
for key in ("pathParameters", "stageVariables"):
    event.pop(key, None)  # a Function URL has neither
json.dump(event, open("function-url.json", "w"), indent=2)
open("function-url.json", "a").write("\n")
PY
