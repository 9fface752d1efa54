#!/usr/bin/env bash
# Build local stand-ins for the two images the Dockerfiles pull from a registry,
# for machines that reach no container registry (CI here):
#   - the AWS Lambda Python base: a minimal Debian (debootstrap) with python3 + pip
#     and the base's contract (LAMBDA_TASK_ROOT=/var/task, python3/pip on PATH);
#   - the Lambda Web Adapter image: one inert /lambda-adapter file (the real one is
#     a Rust binary that only acts inside Lambda).
# Idempotent: an image that already exists is kept (FORCE=1 rebuilds).
#
# Usage: scripts/standin_base.sh   (env: CONTAINER_ENGINE, STANDIN_BASE, STANDIN_ADAPTER,
#                                    DEBIAN_SUITE, DEBIAN_MIRROR)
set -euo pipefail

ENGINE="${CONTAINER_ENGINE:-podman}"
BASE_TAG="${STANDIN_BASE:-localhost/lambda-python-standin:bookworm}"
ADAPTER_TAG="${STANDIN_ADAPTER:-localhost/lambda-adapter-standin:0.9.1}"
SUITE="${DEBIAN_SUITE:-bookworm}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

exists() { [[ "${FORCE:-0}" != 1 ]] && "$ENGINE" image inspect "$1" >/dev/null 2>&1; }
QUIET=()
[[ "$ENGINE" == podman ]] && QUIET=(--quiet)  # docker's import has no --quiet

# The Debian mirror apt already uses here (deb822 or one-line sources), else the default.
debian_mirror() {
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then echo "$DEBIAN_MIRROR"; return; fi
    local uri
    uri="$(grep -hsE '^(URIs:|deb ).*/debian/?( |$)' /etc/apt/sources.list.d/*.sources \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -v -- '-security' | head -n1 | sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' \
        | awk '{print $1}')"
    echo "${uri:-http://deb.debian.org/debian}"
}

work="$(mktemp -d /tmp/standin.XXXXXX)"
trap 'rm -rf "$work"' EXIT

if exists "$BASE_TAG"; then
    echo ">> $BASE_TAG already built"
else
    mirror="$(debian_mirror)"
    echo ">> debootstrap $SUITE from $mirror (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
        "$SUITE" "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log"; exit 1; }
    # HTTPS from this machine may pass a proxy with its own CA: trust what the host trusts.
    cp "$CA_BUNDLE" "$work/root/etc/ssl/certs/ca-certificates.crt"
    mkdir -p "$work/root/var/task"
    rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
    tar -C "$work/root" -c . | "$ENGINE" import "${QUIET[@]}" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LAMBDA_TASK_ROOT=/var/task' \
        --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'WORKDIR /var/task' \
        --message "stand-in for public.ecr.aws/lambda/python" \
        - "$BASE_TAG" >/dev/null
    echo ">> built $BASE_TAG"
fi

if exists "$ADAPTER_TAG"; then
    echo ">> $ADAPTER_TAG already built"
else
    mkdir -p "$work/adapter"
    cat >"$work/adapter/lambda-adapter" <<'SCRIPT'
#!/bin/sh
# Stand-in for the AWS Lambda Web Adapter extension: Lambda alone runs extensions,
# so outside Lambda this file is never executed.
echo "lambda-adapter stand-in: does nothing outside AWS Lambda" >&2
exit 0
SCRIPT
    chmod 0755 "$work/adapter/lambda-adapter"
    tar -C "$work/adapter" -c . | "$ENGINE" import "${QUIET[@]}" \
        --message "stand-in for public.ecr.aws/awsguru/aws-lambda-adapter" \
        - "$ADAPTER_TAG" >/dev/null
    echo ">> built $ADAPTER_TAG"
fi
