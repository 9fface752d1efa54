"""infra/template.yaml, checked offline: the field's validators, then its references.

cfn-lint runs the SAM transform and CloudFormation's resource schemas; checkov its
security policies, with every exception written and justified next to the resource.
The references are what neither can know: that the Dockerfiles and build targets the
template names exist, and that every environment variable it sets is a setting the
function in that image reads, with a value the setting accepts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from gateway.settings import Settings as GatewaySettings
from generator.settings import Settings as GeneratorSettings
from support.infra import INFRA, ROOT, TEMPLATE, infra_tool

pytestmark = pytest.mark.infra_lint

MODES = {"stream": "IsStream", "buffered": "IsBuffered"}
SETTINGS: dict[str, type[BaseSettings]] = {
    "Dockerfile.generator": GeneratorSettings,
    "Dockerfile.gateway": GatewaySettings,
}
# Read by a library inside the image rather than by the function's settings:
# huggingface_hub's switch for hub downloads (the image sets it; the template flips it).
LIBRARY_VARIABLES = {"Dockerfile.generator": {"HF_HUB_OFFLINE"}}
SKIP_COMMENT = re.compile(r"#\s*checkov:skip=(CKV2?_[A-Z]+_\d+)\s*:?(.*)")


def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def dockerfile_of(resource: dict[str, Any]) -> Path:
    metadata = resource["Metadata"]
    return (INFRA / metadata["DockerContext"] / metadata["Dockerfile"]).resolve()


def environment(template: dict[str, Any], resource: dict[str, Any]) -> dict[str, Any]:
    """What the function gets: SAM merges Globals' variables with its own."""
    merged = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    merged.update(resource["Properties"]["Environment"]["Variables"])
    return merged


# ---- the validators ----


def test_cfn_lint_is_clean() -> None:
    """Errors, warnings and informational findings alike, in two regions (the SAM
    transform runs offline inside cfn-lint)."""
    result = subprocess.run(
        [
            str(infra_tool("cfn-lint")),
            "--include-checks",
            "I",
            "--non-zero-exit-code",
            "informational",
            "--regions",
            "us-east-1",
            "eu-west-1",
            "--",
            str(TEMPLATE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def checkov(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """One checkov run over the template in each mode and both Dockerfiles.

    checkov evaluates conditions with the parameters' defaults, so it would only see the
    stream-mode functions; a copy whose StreamingMode defaults to `buffered` shows it the
    others. Results are grouped by file (relative names)."""
    text = TEMPLATE.read_text()
    default = "    Default: stream\n    AllowedValues: [stream, buffered]\n"
    assert text.count(default) == 1
    buffered = tmp_path_factory.mktemp("checkov") / "template-buffered.yaml"
    buffered.write_text(text.replace(default, default.replace("stream\n", "buffered\n", 1)))
    files = [TEMPLATE, buffered, ROOT / "Dockerfile.generator", ROOT / "Dockerfile.gateway"]
    args = [str(infra_tool("checkov")), "--skip-download", "--output", "json"]
    for path in files:
        args += ["--file", str(path)]
    # BC_SKIP_MAPPING: no call to the vendor's API for guideline links (no network here).
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "WARNING"}
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=300, check=False, env=env, cwd=ROOT
    )
    assert result.stdout.strip(), result.stderr[-3000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    by_file: dict[str, list[dict[str, Any]]] = {}
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0, report["check_type"]
        for outcome in ("passed_checks", "failed_checks", "skipped_checks"):
            for check in report["results"][outcome]:
                name = Path(check["file_abs_path"]).name
                by_file.setdefault(name, []).append({**check, "outcome": outcome})
    assert set(by_file) == {path.name for path in files}
    return by_file


@pytest.mark.parametrize(
    "name",
    ["template.yaml", "template-buffered.yaml", "Dockerfile.generator", "Dockerfile.gateway"],
)
def test_checkov_passes(checkov: dict[str, list[dict[str, Any]]], name: str) -> None:
    failed = [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for check in checkov[name]
        if check["outcome"] == "failed_checks"
    ]
    assert failed == []


def test_checkov_saw_both_modes(checkov: dict[str, list[dict[str, Any]]], template) -> None:
    for mode, condition in MODES.items():
        scanned = {check["resource"].split(".")[-1] for check in checkov[_file_of(mode)]}
        expected = {
            name for name, fn in functions(template).items() if fn["Condition"] == condition
        }
        assert expected, mode
        assert expected <= scanned, mode


def _file_of(mode: str) -> str:
    return "template.yaml" if mode == "stream" else "template-buffered.yaml"


@pytest.mark.parametrize(
    "path", [TEMPLATE, ROOT / "Dockerfile.generator", ROOT / "Dockerfile.gateway"]
)
def test_every_checkov_skip_is_justified_and_used(
    checkov: dict[str, list[dict[str, Any]]], path: Path
) -> None:
    """Each `# checkov:skip=ID: reason` carries a reason, and silences a check that
    really applies (in at least one mode): no stale or blanket exceptions."""
    comments = [SKIP_COMMENT.search(line) for line in path.read_text().splitlines()]
    skips = [match for match in comments if match]
    for match in skips:
        assert len(match[2].strip()) >= 20, f"{path.name}: {match[1]} needs a reason"
    names = ["template.yaml", "template-buffered.yaml"] if path == TEMPLATE else [path.name]
    skipped = {
        check["check_id"]
        for name in names
        for check in checkov[name]
        if check["outcome"] == "skipped_checks"
    }
    assert {match[1] for match in skips} == skipped


# ---- the references ----


def test_functions_are_images_built_from_existing_dockerfile_targets(template) -> None:
    for name, resource in functions(template).items():
        assert resource["Properties"]["PackageType"] == "Image", name
        dockerfile = dockerfile_of(resource)
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        assert dockerfile.parent == ROOT, "the build context is the repository root"
        stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile.read_text(), re.M | re.I)
        target = resource["Metadata"]["DockerBuildTarget"]
        assert target in stages, f"{name}: no stage {target!r} in {dockerfile.name}"


def test_each_mode_has_one_generator_and_one_gateway_on_its_target(template) -> None:
    """stream: the Lambda Web Adapter targets; buffered: the Mangum `lambda` targets."""
    expected_target = {"IsStream": "stream", "IsBuffered": "lambda"}
    for condition, target in expected_target.items():
        chosen = [fn for fn in functions(template).values() if fn.get("Condition") == condition]
        assert sorted(dockerfile_of(fn).name for fn in chosen) == sorted(SETTINGS)
        assert {fn["Metadata"]["DockerBuildTarget"] for fn in chosen} == {target}
    assert all("Condition" in fn for fn in functions(template).values())
    assert {"GeneratorFunction", "GatewayFunction"} <= set(functions(template))


def test_environment_variables_are_settings_the_functions_read(template) -> None:
    for name, resource in functions(template).items():
        dockerfile = dockerfile_of(resource)
        fields = {field.upper() for field in SETTINGS[dockerfile.name].model_fields}
        library = LIBRARY_VARIABLES.get(dockerfile.name, set())
        for variable in library:
            assert variable in dockerfile.read_text(), f"{variable} is not the image's"
        unknown = set(environment(template, resource)) - fields - library
        assert unknown == set(), f"{name} sets variables {dockerfile.name}'s app never reads"


# Stand-ins for what CloudFormation fills in at deploy time.
DEPLOY_TIME = {
    "SiteDistribution.DomainName": "d111111abcdef8.cloudfront.net",
    "StartSecret": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:StartSecret-AbCdEf",
    "FunctionUrl": "https://abcdefghij0123456789.lambda-url.eu-west-1.on.aws/",
    "ExtraAllowedOrigins": "http://localhost:8080,http://127.0.0.1:8080",
    "resolve": "s" * 64,
}


def resolve(value: Any, template: dict[str, Any], branch: int) -> str:
    """A plausible deployed value: parameters take their defaults, attributes and the
    secret stand-ins, `Fn::If` the given branch."""
    if isinstance(value, bool | int | float):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if isinstance(value, str):
        if value.startswith("{{resolve:"):
            return DEPLOY_TIME["resolve"]
        return value
    (function, argument), *_ = value.items()
    if function == "Ref":
        return str(template["Parameters"][argument]["Default"])
    if function == "Fn::If":
        return resolve(argument[1 + branch], template, branch)
    if function == "Fn::GetAtt":
        return DEPLOY_TIME[argument[1]]
    if function == "Fn::Sub":
        if argument.startswith("{{resolve:"):
            return DEPLOY_TIME["resolve"]
        return re.sub(r"\$\{([^}]+)\}", lambda m: DEPLOY_TIME[m[1]], argument)
    raise AssertionError(f"no stand-in for {function}")


@pytest.mark.parametrize("branch", [0, 1])
def test_environment_values_are_accepted_by_the_settings(template, branch: int) -> None:
    """The functions would start: their settings validate what the template sets."""
    for name, resource in functions(template).items():
        dockerfile = dockerfile_of(resource)
        values = {
            variable.lower(): resolve(value, template, branch)
            for variable, value in environment(template, resource).items()
            if variable not in LIBRARY_VARIABLES.get(dockerfile.name, set())
        }
        settings = SETTINGS[dockerfile.name].model_validate(values)
        for field, value in values.items():
            assert getattr(settings, field) is not None, f"{name}: {field}={value!r}"


def test_every_parameter_is_used(template) -> None:
    used = set(re.findall(r'"Ref": "(\w+)"|\$\{(\w+)[}.]', json.dumps(template)))
    names = {name for pair in used for name in pair if name}
    assert set(template["Parameters"]) - names == set()


def test_the_generator_is_private_and_the_gateway_signs(template) -> None:
    fns = functions(template)
    for gateway_name, generator_name in [
        ("GatewayFunction", "GeneratorFunction"),
        ("GatewayBufferedFunction", "GeneratorBufferedFunction"),
    ]:
        gateway, generator = fns[gateway_name], fns[generator_name]
        assert gateway["Condition"] == generator["Condition"]
        assert generator["Properties"]["FunctionUrlConfig"]["AuthType"] == "AWS_IAM"
        variables = gateway["Properties"]["Environment"]["Variables"]
        assert variables["GENERATOR_URL"] == {"Fn::GetAtt": [f"{generator_name}Url", "FunctionUrl"]}
        assert variables["GENERATOR_AUTH"] == "sigv4"
        statements = [
            statement
            for policy in gateway["Properties"]["Policies"]
            for statement in policy["Statement"]
        ]
        assert any(
            {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"} <= set(statement["Action"])
            and statement["Resource"] == {"Fn::GetAtt": [generator_name, "Arn"]}
            and statement["Effect"] == "Allow"
            for statement in statements
        ), gateway_name


def test_stream_mode_streams_and_limits_cors_to_the_site(template) -> None:
    fns = functions(template)
    assert fns["GeneratorFunction"]["Properties"]["FunctionUrlConfig"]["InvokeMode"] == (
        "RESPONSE_STREAM"
    )
    url = fns["GatewayFunction"]["Properties"]["FunctionUrlConfig"]
    assert (url["AuthType"], url["InvokeMode"]) == ("NONE", "RESPONSE_STREAM")
    origins = json.dumps(url["Cors"]["AllowOrigins"])
    assert "https://${SiteDistribution.DomainName}" in origins
    assert '"*"' not in origins
    api = template["Resources"]["GatewayHttpApi"]
    assert api["Condition"] == "IsBuffered"
    assert api["Properties"]["CorsConfiguration"]["AllowOrigins"] == url["Cors"]["AllowOrigins"]


def test_the_start_secret_is_generated_never_written(template) -> None:
    secret = template["Resources"]["StartSecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    assert secret["Properties"]["GenerateSecretString"]["PasswordLength"] >= 32
    assert "SecretString" not in secret["Properties"]
    for name, resource in functions(template).items():
        value = resource["Properties"]["Environment"]["Variables"].get("START_SECRET")
        if dockerfile_of(resource).name == "Dockerfile.gateway":
            assert value == {"Fn::Sub": "{{resolve:secretsmanager:${StartSecret}:SecretString}}"}
        else:
            assert value is None, name


def test_timeouts_stay_within_lambda_limits(template) -> None:
    for name, resource in functions(template).items():
        timeout = resource["Properties"]["Timeout"]
        if isinstance(timeout, dict):
            timeout = template["Parameters"][timeout["Ref"]]["MaxValue"]
        assert 1 <= timeout <= 900, name


def test_the_page_is_private_behind_cloudfront(template) -> None:
    resources = template["Resources"]
    block = resources["SiteBucket"]["Properties"]["PublicAccessBlockConfiguration"]
    assert len(block) == 4
    assert all(block.values())
    distribution = resources["SiteDistribution"]["Properties"]["DistributionConfig"]
    origin = distribution["Origins"][0]
    assert origin["OriginAccessControlId"] == {"Fn::GetAtt": ["SiteOriginAccessControl", "Id"]}
    assert distribution["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "redirect-to-https"
    reader = resources["SiteBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert reader["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert "AWS:SourceArn" in reader["Condition"]["StringEquals"]


def test_outputs_name_what_the_deploy_commands_read(template) -> None:
    outputs = set(template["Outputs"])
    assert {"GatewayUrl", "SiteUrl", "SiteBucketName", "DistributionId"} <= outputs
    script = (INFRA / "deploy.sh").read_text()
    for name in re.findall(r"\$\(output (\w+)\)", script):
        assert name in outputs, name


def test_samconfig_deploys_the_stack_make_names() -> None:
    config = tomllib.loads((INFRA / "samconfig.toml").read_text())
    assert config["default"]["global"]["parameters"]["stack_name"] == "textgen"
    assert "STACK_NAME ?= textgen" in (ROOT / "mk" / "infra.mk").read_text()
    assert 'STACK_NAME="${STACK_NAME:-textgen}"' in (INFRA / "deploy.sh").read_text()
    deploy = config["default"]["deploy"]["parameters"]
    assert deploy["resolve_image_repos"] is True
    assert "CAPABILITY_IAM" in deploy["capabilities"]
