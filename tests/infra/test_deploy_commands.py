"""`make deploy`, `make deploy-frontend`, `make destroy`, run offline.

Stand-in `aws`, `sam` and `docker` programs on PATH record every call and answer the
few questions the commands ask (the stack's outputs), so the exact AWS commands, their
order and the page that would be uploaded are checked without an account; and with no
CLI, or no credentials, each command has to stop with a clear message.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from support.infra import INFRA, ROOT

FRONTEND = ROOT / "frontend"
CONFIG_SHAPE = re.compile(
    r'^window\.APP_CONFIG = \{\s*gatewayUrl: "(?P<url>[^"\\]*)",?\s*\};\s*$', re.M
)
GATEWAY_URL = "https://gw0123456789abcdef.lambda-url.eu-west-1.on.aws/"
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:ApiKeySecret-AbCdEf"
KEY_COMMAND = (
    f"aws secretsmanager get-secret-value --region eu-west-1 --secret-id {SECRET_ARN} "
    "--query SecretString --output text"
)
BUCKET = "textgen-sitebucket-1a2b3c4d5e6f"
DISTRIBUTION = "E2EXAMPLE0ABCD"

FAKE_AWS = r"""#!/bin/bash
echo "aws $*" >>"$FAKE_LOG"
case "$1 $2" in
  "sts get-caller-identity")
    if [ -n "${FAKE_NO_CREDENTIALS:-}" ]; then
      echo 'Unable to locate credentials. Run "aws configure".' >&2
      exit 253
    fi
    echo "arn:aws:iam::123456789012:user/developer" ;;
  "lambda get-account-settings") echo "${FAKE_CONCURRENCY:-1000}" ;;
  "cloudformation describe-stacks")
    case "$*" in
      *ParameterKey*) echo "${FAKE_STACK_PARAMETER:-None}" ;;
      *ApiKeyCommand*) echo "${FAKE_KEY_COMMAND:-__KEY_COMMAND__}" ;;
      *PageGatewayUrl*) echo "${FAKE_PAGE_GATEWAY:-__GATEWAY__}" ;;
      *GatewayUrl*) echo "__GATEWAY__" ;;
      *SiteBucketName*) echo "__BUCKET__" ;;
      *DistributionId*) echo "__DISTRIBUTION__" ;;
      *SiteUrl*) echo "https://d111111abcdef8.cloudfront.net/" ;;
      *) echo "[]" ;;
    esac ;;
  "s3 sync") cp -R "$3." "$FAKE_S3/" ;;
  "s3 cp") cp "$3" "$FAKE_S3/$(basename "$4")" ;;
  *) ;;
esac
""".replace("__GATEWAY__", GATEWAY_URL).replace("__BUCKET__", BUCKET)
FAKE_AWS = FAKE_AWS.replace("__DISTRIBUTION__", DISTRIBUTION).replace(
    "__KEY_COMMAND__", KEY_COMMAND
)
FAKE_RECORDER = '#!/bin/bash\necho "$(basename "$0") $* (in $(pwd))" >>"$FAKE_LOG"\n'


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


# What make and the deploy script use from the system; nothing else is on the sandbox's
# PATH, so an aws, sam or docker installed on this machine cannot leak in.
SYSTEM_TOOLS = (
    "bash", "sh", "env", "make", "cp", "mkdir", "mktemp", "rm", "cat", "dirname",
    "basename", "grep", "awk", "sed", "tr", "head", "tail", "ls", "chmod", "printf",
)  # fmt: skip


@pytest.fixture
def sandbox(tmp_path: Path) -> dict[str, str]:
    """PATH with the system tools make needs and stand-ins added per test."""
    bin_dir, tools = tmp_path / "bin", tmp_path / "tools"
    bin_dir.mkdir()
    tools.mkdir()
    for tool in SYSTEM_TOOLS:
        found = shutil.which(tool, path="/usr/bin:/bin")
        if found:
            (tools / tool).symlink_to(found)
    (tmp_path / "s3").mkdir()
    return {
        "PATH": f"{bin_dir}:{tools}",
        "HOME": str(tmp_path),
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_S3": str(tmp_path / "s3"),
        "LANG": "C.UTF-8",
    }


def install(env: dict[str, str], *names: str) -> None:
    bin_dir = Path(env["PATH"].split(":")[0])
    for name in names:
        path = bin_dir / name
        path.write_text(FAKE_AWS if name == "aws" else FAKE_RECORDER)
        path.chmod(0o755)


def make(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shutil.which("make") or "make", "--no-print-directory", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def calls(env: dict[str, str]) -> list[str]:
    log = Path(env["FAKE_LOG"])
    return log.read_text().splitlines() if log.exists() else []


# ---- the page's config: the one file deploy-frontend rewrites ----


def test_the_tracked_config_has_the_shape_deploy_frontend_writes() -> None:
    match = CONFIG_SHAPE.search((FRONTEND / "config.js").read_text())
    assert match is not None, "frontend/config.js: window.APP_CONFIG = { gatewayUrl: ... };"
    assert "APP_CONFIG" in (FRONTEND / "app.js").read_text()


def test_stage_rewrites_config_js_in_a_copy_only(tmp_path: Path) -> None:
    before = _digest(FRONTEND)
    site = tmp_path / "site"
    subprocess.run(
        ["bash", str(INFRA / "deploy.sh"), "stage", GATEWAY_URL, str(site)], check=True, timeout=30
    )
    assert _digest(FRONTEND) == before, "the tracked page must not change"
    staged = _digest(site)
    assert set(staged) == set(before)
    changed = {name for name in staged if staged[name] != before[name]}
    assert changed == {"config.js"}
    match = CONFIG_SHAPE.search((site / "config.js").read_text())
    assert match is not None
    assert match["url"] == GATEWAY_URL.rstrip("/")  # the page appends paths itself


@pytest.mark.parametrize(
    "url", ['https://x.example/"; alert(1); "', "javascript:alert(1)", "https://a b/", ""]
)
def test_stage_refuses_what_is_not_a_plain_url(tmp_path: Path, url: str) -> None:
    result = subprocess.run(
        ["bash", str(INFRA / "deploy.sh"), "stage", url, str(tmp_path / "site")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "error:" in result.stderr
    assert not (tmp_path / "site" / "config.js").exists()


# ---- missing tools and credentials: clear failures ----


@pytest.mark.parametrize("target", ["deploy", "deploy-frontend", "destroy"])
def test_without_the_aws_cli_each_command_says_so(sandbox: dict[str, str], target: str) -> None:
    result = make(sandbox, target)
    assert result.returncode != 0
    assert "the AWS CLI (aws) is not installed" in result.stderr


@pytest.mark.parametrize("target", ["deploy", "deploy-frontend", "destroy"])
def test_without_credentials_each_command_says_so(sandbox: dict[str, str], target: str) -> None:
    install(sandbox, "aws", "sam", "docker")
    result = make({**sandbox, "FAKE_NO_CREDENTIALS": "1"}, target)
    assert result.returncode != 0
    assert "no usable AWS credentials" in result.stderr
    assert "Unable to locate credentials" in result.stderr
    assert calls(sandbox) == ["aws sts get-caller-identity --query Arn --output text"]


def test_deploy_without_sam_says_so(sandbox: dict[str, str]) -> None:
    install(sandbox, "aws", "docker")
    result = make(sandbox, "deploy")
    assert result.returncode != 0
    assert "the AWS SAM CLI (sam) is not installed" in result.stderr


def test_deploy_without_docker_says_so(sandbox: dict[str, str]) -> None:
    install(sandbox, "aws", "sam")
    result = make(sandbox, "deploy")
    assert result.returncode != 0
    assert "sam build needs Docker" in result.stderr


# ---- the commands themselves ----


def test_deploy_builds_deploys_then_uploads_the_page(sandbox: dict[str, str]) -> None:
    install(sandbox, "aws", "sam", "docker")
    result = make({**sandbox, "CONFIRM": "0"}, "deploy", "PARAMS=StreamingMode=buffered")
    assert result.returncode == 0, result.stderr
    made = calls(sandbox)
    sam = [call for call in made if call.startswith("sam ")]
    assert sam == [
        f"sam build (in {INFRA})",
        "sam deploy --stack-name textgen --parameter-overrides StreamingMode=buffered "
        f"--no-confirm-changeset (in {INFRA})",
    ]
    # Not a terminal: never guided, whether or not the stack exists.
    assert "--guided" not in result.stderr
    # The page follows the stack.
    assert made.index(sam[-1]) < made.index(next(c for c in made if c.startswith("aws s3 ")))
    # Every command is printed before it runs.
    assert "$ sam deploy --stack-name textgen" in result.stderr
    assert "--cache-control public\\,\\ max-age=300" in result.stderr  # shell-quoted


def test_deploy_prints_how_to_read_the_api_key(sandbox: dict[str, str]) -> None:
    install(sandbox, "aws", "sam", "docker")
    result = make({**sandbox, "CONFIRM": "0"}, "deploy-stack")
    assert result.returncode == 0, result.stderr
    assert f"   {KEY_COMMAND}\n" in result.stderr
    assert "Authorization: Bearer <key>" in result.stderr
    # After the stack's outputs, where the user looks last.
    assert result.stderr.index("stack outputs") < result.stderr.index(KEY_COMMAND)


def test_deploy_says_when_api_keys_are_off(sandbox: dict[str, str]) -> None:
    install(sandbox, "aws", "sam", "docker")
    result = make({**sandbox, "CONFIRM": "0", "FAKE_KEY_COMMAND": "None"}, "deploy-stack")
    assert result.returncode == 0, result.stderr
    assert "API keys are off (ApiKeys=Disabled)" in result.stderr
    assert "secretsmanager" not in result.stderr


# ---- reserved concurrency on an account that cannot reserve ----


def test_deploy_stops_before_building_where_lambda_refuses_reservations(
    sandbox: dict[str, str],
) -> None:
    """A new account's quota (often 10) allows no reserved concurrency: say so at once,
    with the command that deploys there, rather than after the build and a rollback."""
    install(sandbox, "aws", "sam", "docker")
    result = make({**sandbox, "FAKE_CONCURRENCY": "10"}, "deploy", "PARAMS=StreamingMode=buffered")
    assert result.returncode != 0
    assert "concurrency quota in this region is 10" in result.stderr
    assert "GeneratorMaxInstances=5 and GatewayMaxInstances=10" in result.stderr  # the defaults
    assert (
        'make deploy PARAMS="StreamingMode=buffered GeneratorMaxInstances=0 GatewayMaxInstances=0"'
        in result.stderr
    )
    assert not [call for call in calls(sandbox) if call.startswith("sam ")]


def test_deploy_stops_where_the_caps_leave_less_than_100_unreserved(
    sandbox: dict[str, str],
) -> None:
    """Above a quota of 100, Lambda keeps 100 unreserved: 110 cannot reserve 5 + 10."""
    install(sandbox, "aws", "sam", "docker")
    result = make({**sandbox, "FAKE_CONCURRENCY": "110"}, "deploy")
    assert result.returncode != 0
    assert "100 of it unreserved" in result.stderr
    assert not [call for call in calls(sandbox) if call.startswith("sam ")]


@pytest.mark.parametrize(
    "where",
    [
        {"PARAMS": "GeneratorMaxInstances=0 GatewayMaxInstances=0"},
        {"FAKE_STACK_PARAMETER": "0"},  # the deployed stack's values, which SAM keeps
    ],
)
def test_deploy_without_reservations_goes_ahead_on_a_small_account(
    sandbox: dict[str, str], where: dict[str, str]
) -> None:
    install(sandbox, "aws", "sam", "docker")
    result = make({**sandbox, "FAKE_CONCURRENCY": "10", "CONFIRM": "0", **where}, "deploy-stack")
    assert result.returncode == 0, result.stderr
    assert "reserving generator 0, gateway 0" in result.stderr
    assert any(call.startswith("sam deploy ") for call in calls(sandbox))


def test_deploy_reads_the_caps_samconfig_saved(sandbox: dict[str, str], tmp_path: Path) -> None:
    """`sam deploy --guided` saves its answers in samconfig.toml, escaped quotes and all."""
    infra = tmp_path / "repo" / "infra"
    infra.mkdir(parents=True)
    for name in ("deploy.sh", "template.yaml"):
        shutil.copy(INFRA / name, infra / name)
    (infra / "samconfig.toml").write_text(
        "version = 0.1\n[default.deploy.parameters]\n"
        'parameter_overrides = "StreamingMode=\\"stream\\" GeneratorMaxInstances=\\"0\\" '
        'GatewayMaxInstances=\\"0\\""\n'
    )
    install(sandbox, "aws", "sam", "docker")
    env = {**sandbox, "FAKE_CONCURRENCY": "10", "CONFIRM": "0"}
    result = subprocess.run(
        ["bash", str(infra / "deploy.sh"), "stack"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "reserving generator 0, gateway 0" in result.stderr


def test_deploy_frontend_uploads_the_page_with_the_gateway_url(sandbox: dict[str, str]) -> None:
    install(sandbox, "aws")
    result = make(sandbox, "deploy-frontend")
    assert result.returncode == 0, result.stderr
    made = calls(sandbox)
    uploads = [call for call in made if call.startswith(("aws s3", "aws cloudfront"))]
    assert len(uploads) == 4
    sync, config, index, invalidation = uploads
    assert re.fullmatch(
        rf"aws s3 sync \S+/ s3://{BUCKET}/ --delete --exclude index.html --exclude config.js "
        r"--cache-control public, max-age=300",
        sync,
    )
    assert re.fullmatch(
        rf"aws s3 cp \S+/config.js s3://{BUCKET}/config.js --cache-control no-cache "
        r"--content-type text/javascript; charset=utf-8",
        config,
    )
    assert re.fullmatch(
        rf"aws s3 cp \S+/index.html s3://{BUCKET}/index.html --cache-control no-cache "
        r"--content-type text/html; charset=utf-8",
        index,
    )
    assert invalidation.startswith(
        f"aws cloudfront create-invalidation --distribution-id {DISTRIBUTION} --paths /*"
    )
    uploaded = Path(sandbox["FAKE_S3"])
    match = CONFIG_SHAPE.search((uploaded / "config.js").read_text())
    assert match is not None
    assert match["url"] == GATEWAY_URL.rstrip("/")
    assert set(_digest(uploaded)) == set(_digest(FRONTEND))
    assert "https://d111111abcdef8.cloudfront.net/" in result.stderr  # where to look


@pytest.mark.parametrize(
    ("page_gateway", "expected"),
    [
        ("https://d2222222abcdef8.cloudfront.net/", "https://d2222222abcdef8.cloudfront.net"),
        ("None", GATEWAY_URL.rstrip("/")),  # a stack from before PageGatewayUrl
    ],
)
def test_deploy_frontend_points_the_page_where_the_stack_says(
    sandbox: dict[str, str], page_gateway: str, expected: str
) -> None:
    """PageGatewayUrl: the edge distribution in front of the gateway (EdgeRateLimit,
    EdgeWebAclArn), else the gateway itself."""
    install(sandbox, "aws")
    result = make({**sandbox, "FAKE_PAGE_GATEWAY": page_gateway}, "deploy-frontend")
    assert result.returncode == 0, result.stderr
    match = CONFIG_SHAPE.search((Path(sandbox["FAKE_S3"]) / "config.js").read_text())
    assert match is not None
    assert match["url"] == expected


def test_destroy_asks_first_then_empties_the_bucket_and_deletes(sandbox: dict[str, str]) -> None:
    install(sandbox, "aws", "sam")
    refused = make(sandbox, "destroy")
    assert refused.returncode != 0
    assert "YES=1" in refused.stderr
    assert not [call for call in calls(sandbox) if call.startswith(("aws s3", "sam "))]

    result = make({**sandbox, "YES": "1"}, "destroy")
    assert result.returncode == 0, result.stderr
    made = calls(sandbox)
    empty = made.index(f"aws s3 rm s3://{BUCKET} --recursive")
    delete = made.index(f"sam delete --stack-name textgen --no-prompts (in {INFRA})")
    assert empty < delete


def test_make_help_lists_the_deploy_targets() -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    listed = {line.split()[0] for line in re.sub(r"\x1b\[[0-9;]*m", "", result.stdout).splitlines()}
    assert {"deploy", "deploy-frontend", "destroy", "infra-deps"} <= listed
