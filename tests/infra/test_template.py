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

import page_server
from gateway.settings import Settings as GatewaySettings
from generator.settings import Settings as GeneratorSettings
from streamkit.generation import GenerationLimits
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


def resolve(value: Any, template: dict[str, Any], branch: int) -> str | None:
    """A plausible deployed value: parameters take their defaults, attributes and the
    secret stand-ins, `Fn::If` the given branch; None for `AWS::NoValue` (unset)."""
    if isinstance(value, bool | int | float):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if isinstance(value, str):
        if value.startswith("{{resolve:"):
            return DEPLOY_TIME["resolve"]
        return value
    (function, argument), *_ = value.items()
    if function == "Ref":
        if argument == "AWS::NoValue":
            return None
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
        resolved = {
            variable.lower(): resolve(value, template, branch)
            for variable, value in environment(template, resource).items()
            if variable not in LIBRARY_VARIABLES.get(dockerfile.name, set())
        }
        values = {field: value for field, value in resolved.items() if value is not None}
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
    read = re.findall(r"\$\((?:optional_)?output (\w+)\)", script)
    assert {"PageGatewayUrl", "ApiKeyCommand", "GatewayUrl"} <= set(read)
    for name in read:
        assert name in outputs, name


def test_samconfig_deploys_the_stack_make_names() -> None:
    config = tomllib.loads((INFRA / "samconfig.toml").read_text())
    assert config["default"]["global"]["parameters"]["stack_name"] == "textgen"
    assert "STACK_NAME ?= textgen" in (ROOT / "mk" / "infra.mk").read_text()
    assert 'STACK_NAME="${STACK_NAME:-textgen}"' in (INFRA / "deploy.sh").read_text()
    deploy = config["default"]["deploy"]["parameters"]
    assert deploy["resolve_image_repos"] is True
    assert "CAPABILITY_IAM" in deploy["capabilities"]


# ---- a deployment's choices: conditions and rules evaluated for given parameters ----


class Deployment:
    """The template as CloudFormation would deploy it with these parameters in this
    region: which conditions hold, which resources exist, what `Fn::If` picks and
    which of the template's Rules refuse the parameters."""

    def __init__(self, template: dict[str, Any], region: str = "eu-west-1", **overrides: Any):
        self.template = template
        unknown = set(overrides) - set(template["Parameters"])
        assert not unknown, f"no such parameters: {unknown}"
        self.values = {name: spec.get("Default") for name, spec in template["Parameters"].items()}
        self.values.update(overrides)
        self.values["AWS::Region"] = region

    def scalar(self, value: Any) -> str:
        if isinstance(value, dict) and set(value) == {"Ref"}:
            return str(self.values[value["Ref"]])
        assert not isinstance(value, dict | list), value
        return str(value)

    def holds(self, expression: Any) -> bool:
        """A condition (its name) or a condition/rule expression."""
        if isinstance(expression, str):
            return self.holds(self.template["Conditions"][expression])
        (function, argument), *_ = expression.items()
        if function == "Fn::Equals":
            return self.scalar(argument[0]) == self.scalar(argument[1])
        if function == "Fn::Not":
            return not self.holds(argument[0])
        if function == "Fn::And":
            return all(self.holds(item) for item in argument)
        if function == "Fn::Or":
            return any(self.holds(item) for item in argument)
        if function == "Condition":
            return self.holds(argument)
        raise AssertionError(f"cannot evaluate {function}")

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return {
            name: resource
            for name, resource in self.template["Resources"].items()
            if "Condition" not in resource or self.holds(resource["Condition"])
        }

    @property
    def outputs(self) -> dict[str, Any]:
        return {
            name: self.pick(output["Value"])
            for name, output in self.template["Outputs"].items()
            if "Condition" not in output or self.holds(output["Condition"])
        }

    def pick(self, value: Any) -> Any:
        """`value` with every `Fn::If` decided; None where it chose `AWS::NoValue`."""
        if isinstance(value, list):
            return [self.pick(item) for item in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Fn::If"}:
            condition, then, otherwise = value["Fn::If"]
            return self.pick(then if self.holds(condition) else otherwise)
        if value == {"Ref": "AWS::NoValue"}:
            return None
        return {key: self.pick(item) for key, item in value.items()}

    def refusals(self) -> list[str]:
        """The AssertDescription of every rule assertion these parameters fail."""
        refused = []
        for rule in self.template.get("Rules", {}).values():
            if "RuleCondition" in rule and not self.holds(rule["RuleCondition"]):
                continue
            refused += [
                assertion["AssertDescription"]
                for assertion in rule["Assertions"]
                if not self.holds(assertion["Assert"])
            ]
        return refused


def gateways(deployment: Deployment) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in deployment.resources.items()
        if resource["Type"] == "AWS::Serverless::Function"
        and dockerfile_of(resource).name == "Dockerfile.gateway"
    }


def test_rules_refuse_nothing_by_default_in_any_region(template) -> None:
    for region in ("us-east-1", "eu-west-1", "ap-southeast-2"):
        assert Deployment(template, region).refusals() == []


# ---- API keys ----


def test_the_api_key_is_generated_and_feeds_api_keys(template) -> None:
    deployment = Deployment(template)
    assert deployment.values["ApiKeys"] == "Enabled"
    secret = deployment.resources["ApiKeySecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    generated = secret["Properties"]["GenerateSecretString"]
    assert generated["PasswordLength"] >= 32
    # Keys travel in a header and in a comma-separated API_KEYS: letters and digits only.
    assert generated["ExcludePunctuation"] is True
    assert "SecretString" not in secret["Properties"]
    reference = {"Fn::Sub": "{{resolve:secretsmanager:${ApiKeySecret}:SecretString}}"}
    for name, gateway in gateways(deployment).items():
        variables = deployment.pick(gateway["Properties"]["Environment"]["Variables"])
        assert variables["API_KEYS"] == reference, name
    for name, resource in functions(template).items():
        if dockerfile_of(resource).name != "Dockerfile.gateway":
            assert "API_KEYS" not in resource["Properties"]["Environment"]["Variables"], name


def test_a_pinned_version_of_the_key_reaches_the_gateway(template) -> None:
    """Setting ApiKeysVersion changes the gateway's configuration, so CloudFormation
    resolves the reference again: how a rotated key gets there."""
    version = "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111"
    assert re.fullmatch(template["Parameters"]["ApiKeysVersion"]["AllowedPattern"], version)
    deployment = Deployment(template, ApiKeysVersion=version)
    for name, gateway in gateways(deployment).items():
        value = deployment.pick(gateway["Properties"]["Environment"]["Variables"]["API_KEYS"])
        assert value == {
            "Fn::Sub": "{{resolve:secretsmanager:${ApiKeySecret}:SecretString:::${ApiKeysVersion}}}"
        }, name


def test_keys_can_be_turned_off(template) -> None:
    deployment = Deployment(template, ApiKeys="Disabled")
    assert "ApiKeySecret" not in deployment.resources
    for name, gateway in gateways(deployment).items():
        variables = deployment.pick(gateway["Properties"]["Environment"]["Variables"])
        assert variables.get("API_KEYS") is None, name
    assert "ApiKeyCommand" not in deployment.outputs


def test_the_outputs_say_how_to_read_the_key(template) -> None:
    outputs = Deployment(template).outputs
    assert outputs["ApiKeySecretArn"] == {"Ref": "ApiKeySecret"}
    command = outputs["ApiKeyCommand"]["Fn::Sub"]
    assert command == (
        "aws secretsmanager get-secret-value --region ${AWS::Region} "
        "--secret-id ${ApiKeySecret} --query SecretString --output text"
    )
    assert "ApiKeyCommand" in (INFRA / "deploy.sh").read_text()


# ---- caps ----


def test_concurrency_caps_are_finite_by_default(template) -> None:
    """Each stream holds one generator and one gateway instance: both are reserved,
    the gateway at least as many as the generator (it also answers the quick calls)."""
    deployment = Deployment(template)
    generator_cap = deployment.values["GeneratorMaxInstances"]
    gateway_cap = deployment.values["GatewayMaxInstances"]
    assert isinstance(generator_cap, int)
    assert isinstance(gateway_cap, int)
    assert 0 < generator_cap <= gateway_cap
    for name, resource in deployment.resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        expected = (
            gateway_cap if dockerfile_of(resource).name == "Dockerfile.gateway" else generator_cap
        )
        reserved = deployment.pick(resource["Properties"]["ReservedConcurrentExecutions"])
        assert deployment.scalar(reserved) == str(expected), name
    for gateway in gateways(deployment).values():
        streams = gateway["Properties"]["Environment"]["Variables"]["MAX_STREAMS"]
        assert isinstance(deployment.values[streams["Ref"]], int)


@pytest.mark.parametrize("mode", ["stream", "buffered"])
def test_zero_means_no_reservation(template, mode: str) -> None:
    """What an account whose quota is 100 or less needs: Lambda refuses any
    reservation there, so 0 must leave the property out altogether."""
    deployment = Deployment(
        template, StreamingMode=mode, GeneratorMaxInstances=0, GatewayMaxInstances=0
    )
    chosen = [r for r in deployment.resources.values() if r["Type"] == "AWS::Serverless::Function"]
    assert len(chosen) == 2
    for resource in chosen:
        assert deployment.pick(resource["Properties"]["ReservedConcurrentExecutions"]) is None


def test_limit_defaults_are_the_codes(template) -> None:
    limits = GenerationLimits()
    parameters = template["Parameters"]
    assert parameters["MaxPromptChars"]["Default"] == limits.max_prompt_chars
    assert parameters["MaxBodyBytes"]["Default"] == limits.max_body_bytes
    assert parameters["MaxNewTokensLimit"]["Default"] == limits.max_new_tokens_limit
    shared = template["Globals"]["Function"]["Environment"]["Variables"]
    assert shared["MAX_PROMPT_CHARS"] == {"Ref": "MaxPromptChars"}
    assert shared["MAX_BODY_BYTES"] == {"Ref": "MaxBodyBytes"}


# ---- the page's security headers ----


def csp_directives(policy: str) -> dict[str, list[str]]:
    directives = [part.split() for part in policy.split(";") if part.strip()]
    return {name: sources for name, *sources in directives}


def csp_allows(source: str, url: str) -> bool:
    """Whether a CSP host source (`https://*.example.com`, `https://host:port`) matches
    the URL: enough of CSP's matching for the sources the template uses."""
    pattern = re.escape(source).replace(r"\*\.", r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.")
    return re.match(rf"^{pattern}(/|$)", url) is not None


def page_csp(deployment: Deployment) -> dict[str, list[str]]:
    """The distribution's policy as deployed: Fn::Sub's text with its variables filled."""
    distribution = deployment.resources["SiteDistribution"]["Properties"]["DistributionConfig"]
    assert distribution["DefaultCacheBehavior"]["ResponseHeadersPolicyId"] == {
        "Ref": "SiteHeadersPolicy"
    }
    config = deployment.resources["SiteHeadersPolicy"]["Properties"]["ResponseHeadersPolicyConfig"]
    csp = config["SecurityHeadersConfig"]["ContentSecurityPolicy"]
    assert csp["Override"] is True
    text, variables = csp["ContentSecurityPolicy"]["Fn::Sub"]
    names = {name: deployment.pick(value) for name, value in variables.items()}
    names = {
        name: value["Fn::Sub"] if isinstance(value, dict) else value
        for name, value in names.items()
    }
    names["AWS::Region"] = deployment.values["AWS::Region"]
    names["AWS::URLSuffix"] = "amazonaws.com"
    filled = re.sub(r"\$\{([^}]+)\}", lambda m: names[m[1]], text)
    filled = re.sub(r"\$\{([^}]+)\}", lambda m: names[m[1]], filled)
    return csp_directives(filled)


@pytest.mark.parametrize(
    ("mode", "gateway_url"),
    [
        ("stream", "https://abcdefghij0123456789.lambda-url.eu-west-1.on.aws/"),
        ("buffered", "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/"),
    ],
)
def test_the_page_csp_lets_it_reach_its_gateway_and_nothing_else(
    template, mode: str, gateway_url: str
) -> None:
    directives = page_csp(Deployment(template, StreamingMode=mode))
    connect = directives["connect-src"]
    assert connect[0] == "'self'"
    assert any(csp_allows(source, gateway_url) for source in connect[1:]), connect
    # Only this region's gateways: not another region's, not another service.
    assert not any(csp_allows(s, gateway_url.replace("eu-west-1", "us-east-1")) for s in connect)
    assert not any(csp_allows(source, "https://evil.example/") for source in connect)
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["default-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["object-src"] == ["'none'"]


def test_the_page_gets_nosniff_referrer_and_frame_headers(template) -> None:
    """Everything AWS's managed SecurityHeadersPolicy sent, plus the CSP, each
    overriding the origin."""
    config = template["Resources"]["SiteHeadersPolicy"]["Properties"]["ResponseHeadersPolicyConfig"]
    headers = config["SecurityHeadersConfig"]
    assert set(headers) == {
        "ContentSecurityPolicy", "ContentTypeOptions", "FrameOptions", "ReferrerPolicy",
        "StrictTransportSecurity", "XSSProtection",
    }  # fmt: skip
    assert all(header["Override"] is True for header in headers.values())
    assert headers["ReferrerPolicy"]["ReferrerPolicy"] == "no-referrer"
    assert headers["FrameOptions"]["FrameOption"] == "DENY"
    assert headers["StrictTransportSecurity"]["AccessControlMaxAgeSec"] >= 31536000


def test_the_local_page_server_sends_the_deployed_policy(template) -> None:
    """Same directives, locally and deployed; only the gateway in connect-src differs."""
    deployed = page_csp(Deployment(template))
    local_headers = page_server.security_headers("http://127.0.0.1:8000")
    local = csp_directives(local_headers["Content-Security-Policy"])
    assert local.pop("connect-src") == ["'self'", "http://127.0.0.1:8000"]
    deployed.pop("connect-src")
    assert local == deployed
    config = template["Resources"]["SiteHeadersPolicy"]["Properties"]["ResponseHeadersPolicyConfig"]
    headers = config["SecurityHeadersConfig"]
    assert local_headers["Referrer-Policy"] == headers["ReferrerPolicy"]["ReferrerPolicy"]
    assert local_headers["X-Frame-Options"] == headers["FrameOptions"]["FrameOption"]
    assert local_headers["X-Content-Type-Options"] == "nosniff"


# ---- the opt-in edge rate limit ----


EDGE_ACL_ARN = (
    "arn:aws:wafv2:us-east-1:123456789012:global/webacl/textgen-edge/"
    "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111"
)


def test_no_web_acl_by_default(template) -> None:
    deployment = Deployment(template)
    assert not [r for r in deployment.resources.values() if r["Type"].startswith("AWS::WAFv2")]
    assert "EdgeApiDistribution" not in deployment.resources
    assert deployment.outputs["PageGatewayUrl"] == {
        "Fn::GetAtt": ["GatewayFunctionUrl", "FunctionUrl"]
    }


@pytest.mark.parametrize("mode", ["stream", "buffered"])
def test_edge_rate_limit_puts_a_rate_rule_in_front_of_the_page_gateway(template, mode: str) -> None:
    deployment = Deployment(template, "us-east-1", StreamingMode=mode, EdgeRateLimit=100)
    assert deployment.refusals() == []
    acl = deployment.resources["EdgeWebAcl"]
    assert acl["Type"] == "AWS::WAFv2::WebACL"
    assert acl["Properties"]["Scope"] == "CLOUDFRONT"
    (rule,) = acl["Properties"]["Rules"]
    rate = rule["Statement"]["RateBasedStatement"]
    assert rate["Limit"] == {"Ref": "EdgeRateLimit"}
    assert rate["AggregateKeyType"] == "IP"
    blocked = rule["Action"]["Block"]["CustomResponse"]
    assert blocked["ResponseCode"] == 429
    assert {h["Name"] for h in blocked["ResponseHeaders"]} >= {
        "retry-after", "access-control-allow-origin",
    }  # fmt: skip
    edge = deployment.resources["EdgeApiDistribution"]["Properties"]["DistributionConfig"]
    assert deployment.pick(edge["WebACLId"]) == {"Fn::GetAtt": ["EdgeWebAcl", "Arn"]}
    origin = deployment.pick(edge["Origins"][0]["DomainName"])
    target = "GatewayFunctionUrl" if mode == "stream" else "GatewayHttpApi"
    assert target in json.dumps(origin)
    behavior = edge["DefaultCacheBehavior"]
    assert "POST" in behavior["AllowedMethods"]
    assert behavior["Compress"] is False  # a stream is never held back to be compressed
    # The page is pointed at the edge, and may call it.
    assert deployment.outputs["PageGatewayUrl"] == {
        "Fn::Sub": "https://${EdgeApiDistribution.DomainName}/"
    }
    connect = page_csp(deployment)["connect-src"]
    assert any(csp_allows(s, "https://d2222222abcdef8.cloudfront.net/") for s in connect)


def test_an_existing_web_acl_can_be_attached_from_any_region(template) -> None:
    deployment = Deployment(template, "eu-west-1", EdgeWebAclArn=EDGE_ACL_ARN)
    assert deployment.refusals() == []
    assert re.fullmatch(template["Parameters"]["EdgeWebAclArn"]["AllowedPattern"], EDGE_ACL_ARN)
    assert "EdgeWebAcl" not in deployment.resources
    edge = deployment.resources["EdgeApiDistribution"]["Properties"]["DistributionConfig"]
    assert deployment.scalar(deployment.pick(edge["WebACLId"])) == EDGE_ACL_ARN


def test_the_rules_refuse_a_web_acl_the_region_cannot_create(template) -> None:
    """CLOUDFRONT-scoped web ACLs exist only in us-east-1: elsewhere the stack is
    refused before anything is created, with the way out in the message."""
    (refusal,) = Deployment(template, "eu-west-1", EdgeRateLimit=100).refusals()
    assert "us-east-1" in refusal
    assert "EdgeWebAclArn" in refusal
    both = Deployment(template, "us-east-1", EdgeRateLimit=100, EdgeWebAclArn=EDGE_ACL_ARN)
    assert len(both.refusals()) == 1
