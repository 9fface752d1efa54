#!/usr/bin/env bash
# Deploy, update and remove the stack of infra/template.yaml (the make targets call this).
#
#   infra/deploy.sh stack              sam build + sam deploy (guided the first time), after
#                                      checking Lambda allows the stack's reserved concurrency;
#                                      then prints how to read the API key
#   infra/deploy.sh frontend           the page, with the deployed gateway URL, to S3 + CloudFront
#   infra/deploy.sh destroy            empty the page bucket, then sam delete
#   infra/deploy.sh stage URL DIR      copy frontend/ to DIR with config.js pointing at URL
#                                      (what `frontend` uploads; needs no AWS)
#
# Settings (environment): STACK_NAME (default textgen), AWS_REGION / AWS_PROFILE (the AWS
# CLI's own), PARAMS ("Key=Value ..." template parameters), CONFIRM (0 = no change-set
# prompt), GUIDED (1 = always, 0 = never; default: when the stack does not exist yet),
# YES (1 = destroy without asking). Every AWS command is printed before it runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INFRA="$ROOT/infra"
FRONTEND="$ROOT/frontend"
STACK_NAME="${STACK_NAME:-textgen}"
PARAMS="${PARAMS:-}"
CONFIRM="${CONFIRM:-1}"
GUIDED="${GUIDED:-auto}"
YES="${YES:-0}"
STAGING=""

say() { printf '\033[1m>> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
# Print a command, then run it: the user sees exactly what touches their account.
run() { printf '   $' >&2; printf ' %q' "$@" >&2; printf '\n' >&2; "$@"; }

need_aws() {
    command -v aws >/dev/null 2>&1 \
        || die "the AWS CLI (aws) is not installed: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"
    say "checking AWS credentials (aws sts get-caller-identity)"
    local identity
    identity="$(aws sts get-caller-identity --query Arn --output text 2>&1)" \
        || die "no usable AWS credentials: ${identity}
       Configure them first (aws configure, aws sso login, or AWS_PROFILE / AWS_ACCESS_KEY_ID...)."
    say "deploying as ${identity}"
}

need_sam() {
    command -v sam >/dev/null 2>&1 \
        || die "the AWS SAM CLI (sam) is not installed: https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/install-sam-cli.html"
    command -v docker >/dev/null 2>&1 || [ -n "${DOCKER_HOST:-}" ] \
        || die "sam build needs Docker (or a Docker-compatible engine reachable through DOCKER_HOST) to build the images"
}

stack_exists() {
    aws cloudformation describe-stacks --stack-name "$STACK_NAME" >/dev/null 2>&1
}

output() {
    local value
    value="$(optional_output "$1")" \
        || die "cannot read the outputs of stack $STACK_NAME (deployed? right region?)"
    [ -n "$value" ] || die "stack $STACK_NAME has no output $1"
    printf '%s' "$value"
}

# An output's value, or nothing when the stack has no such output (a condition left it
# out, or the stack predates it); fails only when the stack cannot be read.
optional_output() {
    local value
    value="$(aws cloudformation describe-stacks --stack-name "$STACK_NAME" \
        --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text)" || return 1
    [ "$value" = "None" ] || printf '%s' "$value"
}

# The value template parameter $1 gets from `sam deploy`: PARAMS, else the answers
# samconfig.toml saved, else the deployed stack's (SAM keeps a previous value), else the
# template's default.
param_value() {
    local name="$1" value="" re
    re="(^|[[:space:]])$name=\"?([^\"[:space:]]*)"
    if [[ " $PARAMS" =~ $re ]]; then
        printf '%s' "${BASH_REMATCH[2]}"
        return
    fi
    re="[[:space:]\"]$name=\\\\?\"?([^\"\\[:space:]]*)"
    if [[ " $(grep -E '^[[:space:]]*parameter_overrides[[:space:]]*=' "$INFRA/samconfig.toml" 2>/dev/null)" =~ $re ]]; then
        printf '%s' "${BASH_REMATCH[1]}"
        return
    fi
    if stack_exists; then
        value="$(aws cloudformation describe-stacks --stack-name "$STACK_NAME" \
            --query "Stacks[0].Parameters[?ParameterKey=='$name'].ParameterValue" \
            --output text 2>/dev/null || true)"
        if [ -n "$value" ] && [ "$value" != "None" ]; then
            printf '%s' "$value"
            return
        fi
    fi
    awk -v name="  $name:" '$0 == name { found = 1; next }
        found && /^    Default:/ { gsub(/"/, "", $2); print $2; exit }
        found && /^  [A-Za-z]/ { exit }' "$INFRA/template.yaml"
}

# Reserved concurrency (GeneratorMaxInstances, GatewayMaxInstances) is refused by
# Lambda when it would leave less than min(quota, 100) of the account's concurrency
# quota unreserved (new accounts often start at 10): say so now, not after the build and
# a rolled-back stack. (Other functions' reservations are not counted here.)
check_concurrency() {
    local quota generator gateway
    quota="$(aws lambda get-account-settings --query AccountLimit.ConcurrentExecutions \
        --output text 2>/dev/null)" || quota=""
    if ! [[ "$quota" =~ ^[0-9]+$ ]]; then
        say "could not read the account's Lambda concurrency quota (lambda:GetAccountSettings); not checked"
        return 0
    fi
    generator="$(param_value GeneratorMaxInstances)"
    gateway="$(param_value GatewayMaxInstances)"
    [[ "$generator" =~ ^[0-9]+$ ]] || generator=0
    [[ "$gateway" =~ ^[0-9]+$ ]] || gateway=0
    say "Lambda concurrency quota here: $quota; reserving generator $generator, gateway $gateway"
    # Lambda keeps min(quota, 100) unreserved: nothing can be reserved at a quota of 100
    # or less, and at most quota - 100 above it.
    local keep=$((quota < 100 ? quota : 100))
    if [ $((generator + gateway)) -gt 0 ] && [ $((quota - generator - gateway)) -lt "$keep" ]; then
        die "this account's Lambda concurrency quota in this region is $quota, and Lambda keeps
       $keep of it unreserved (new accounts often start at 10, where nothing can be reserved),
       but the stack would reserve GeneratorMaxInstances=$generator and GatewayMaxInstances=$gateway.
       Either deploy without reservations (the quota of $quota then caps both functions together):
         make deploy PARAMS=\"${PARAMS:+$PARAMS }GeneratorMaxInstances=0 GatewayMaxInstances=0\"
       or ask for a higher quota (Service Quotas > AWS Lambda > Concurrent executions) and deploy as is."
    fi
}

# How to read the /v1/* API key, from the stack's ApiKeyCommand output.
print_api_key_help() {
    local command
    command="$(optional_output ApiKeyCommand)" || return 0
    if [ -n "$command" ]; then
        say "the OpenAI-compatible API (/v1/*) needs 'Authorization: Bearer <key>'; print the key with:"
        printf '   %s\n' "$command" >&2
    else
        say "API keys are off (ApiKeys=Disabled): /v1/* answers anyone"
    fi
}

# The page, copied to $2 with config.js pointing at gateway URL $1. Only the copy is
# written: the tracked frontend/config.js keeps pointing at the local gateway.
stage() {
    [ $# -eq 2 ] || die "usage: $0 stage GATEWAY_URL DIRECTORY"
    local url="${1%/}" dir="$2"
    [[ "$url" =~ ^https?://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~/-]*)?$ ]] \
        || die "not a plain http(s) URL, refusing to write it into config.js: $1"
    [ -f "$FRONTEND/config.js" ] || die "$FRONTEND/config.js is missing"
    mkdir -p "$dir"
    cp -R "$FRONTEND/." "$dir/"
    cat >"$dir/config.js" <<EOF
// Where the gateway lives: written by \`make deploy-frontend\` for stack ${STACK_NAME}.
window.APP_CONFIG = {
  gatewayUrl: "${url}",
};
EOF
}

cmd_stack() {
    need_aws
    need_sam
    check_concurrency
    cd "$INFRA"
    say "building both images, both targets (sam build)"
    run sam build
    local args=(--stack-name "$STACK_NAME")
    [ -n "$PARAMS" ] && args+=(--parameter-overrides "$PARAMS")
    [ "$CONFIRM" = 0 ] && args+=(--no-confirm-changeset)
    if [ "$GUIDED" = 1 ] || { [ "$GUIDED" = auto ] && [ -t 0 ] && ! stack_exists; }; then
        say "first deployment of $STACK_NAME: sam deploy --guided (answers are saved in infra/samconfig.toml)"
        args+=(--guided)
    fi
    say "deploying stack $STACK_NAME (sam deploy)"
    run sam deploy "${args[@]}"
    say "stack outputs"
    run aws cloudformation describe-stacks --stack-name "$STACK_NAME" \
        --query "Stacks[0].Outputs[].[OutputKey,OutputValue]" --output table
    print_api_key_help
}

cmd_frontend() {
    need_aws
    say "reading the outputs of stack $STACK_NAME"
    local gateway bucket distribution site
    # The gateway as the page calls it: behind the edge web ACL when there is one. A
    # stack from before PageGatewayUrl existed has only GatewayUrl.
    gateway="$(optional_output PageGatewayUrl)" \
        || die "cannot read the outputs of stack $STACK_NAME (deployed? right region?)"
    [ -n "$gateway" ] || gateway="$(output GatewayUrl)"
    bucket="$(output SiteBucketName)"
    distribution="$(output DistributionId)"
    site="$(output SiteUrl)"
    STAGING="$(mktemp -d)"
    trap 'rm -rf "$STAGING"' EXIT
    local site_dir="$STAGING/site"
    say "staging frontend/ with gatewayUrl = ${gateway%/}"
    stage "$gateway" "$site_dir"
    say "uploading the page to s3://$bucket"
    # Stylesheets and scripts: short caching. index.html and config.js: revalidated on
    # every load, so a redeploy (or a new gateway URL) shows at once.
    run aws s3 sync "$site_dir/" "s3://$bucket/" --delete \
        --exclude index.html --exclude config.js \
        --cache-control "public, max-age=300"
    run aws s3 cp "$site_dir/config.js" "s3://$bucket/config.js" \
        --cache-control "no-cache" --content-type "text/javascript; charset=utf-8"
    run aws s3 cp "$site_dir/index.html" "s3://$bucket/index.html" \
        --cache-control "no-cache" --content-type "text/html; charset=utf-8"
    say "invalidating CloudFront's copies (distribution $distribution)"
    run aws cloudfront create-invalidation --distribution-id "$distribution" --paths "/*" \
        --query Invalidation.Id --output text
    say "the page: $site (CloudFront may take a minute to serve the new files)"
}

cmd_destroy() {
    need_aws
    command -v sam >/dev/null 2>&1 || die "the AWS SAM CLI (sam) is not installed"
    stack_exists || die "no stack $STACK_NAME here (check AWS_REGION / AWS_PROFILE)"
    local bucket
    bucket="$(output SiteBucketName)"
    if [ "$YES" != 1 ]; then
        [ -t 0 ] || die "refusing to delete without a terminal; run with YES=1"
        read -r -p "Delete stack $STACK_NAME, its images and everything in s3://$bucket? [y/N] " answer
        [[ "$answer" =~ ^[Yy]$ ]] || die "nothing deleted"
    fi
    say "emptying s3://$bucket (CloudFormation only deletes empty buckets)"
    run aws s3 rm "s3://$bucket" --recursive
    say "deleting stack $STACK_NAME and its image repositories (sam delete)"
    cd "$INFRA"
    run sam delete --stack-name "$STACK_NAME" --no-prompts
    say "deleted; the secrets (start-id key, API key) stay recoverable for Secrets Manager's 30-day window"
}

case "${1:-}" in
    stack) cmd_stack ;;
    frontend) cmd_frontend ;;
    destroy) cmd_destroy ;;
    stage) shift; stage "$@" ;;
    *) die "usage: $0 stack|frontend|destroy|stage URL DIR" ;;
esac
