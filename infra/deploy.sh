#!/usr/bin/env bash
# Deploy, update and remove the stack of infra/template.yaml (the make targets call this).
#
#   infra/deploy.sh stack              sam build + sam deploy (guided the first time)
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
    value="$(aws cloudformation describe-stacks --stack-name "$STACK_NAME" \
        --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text)" \
        || die "cannot read the outputs of stack $STACK_NAME (deployed? right region?)"
    [ -n "$value" ] && [ "$value" != "None" ] || die "stack $STACK_NAME has no output $1"
    printf '%s' "$value"
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
}

cmd_frontend() {
    need_aws
    say "reading the outputs of stack $STACK_NAME"
    local gateway bucket distribution site
    gateway="$(output GatewayUrl)"
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
    say "deleted; the start-id secret stays recoverable for Secrets Manager's 30-day window"
}

case "${1:-}" in
    stack) cmd_stack ;;
    frontend) cmd_frontend ;;
    destroy) cmd_destroy ;;
    stage) shift; stage "$@" ;;
    *) die "usage: $0 stack|frontend|destroy|stage URL DIR" ;;
esac
