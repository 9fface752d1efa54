#!/usr/bin/env bash
# Install the Debian/Ubuntu packages named on the command line that are not installed yet.
# `make test` uses it for what its browser and container tests need, so a fresh machine
# gets every one of them: nothing is assumed to be there already.
#
#   scripts/system_packages.sh WHY PACKAGE...
#
# Each package is checked with dpkg, not by looking for a command: a command can be
# present while a package it needs at run time is not (podman without iptables). Packages
# are installed without their "Recommends", so the lists in mk/*.mk are complete on their
# own. Needs root (or password-less sudo) when something is missing; says what to run
# otherwise, and stops with that message on a machine without apt-get.
set -euo pipefail

why="$1"
shift
missing=()
for package in "$@"; do
    status="$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)"
    [[ "$status" == installed ]] || missing+=("$package")
done
((${#missing[@]} == 0)) && exit 0

if ! command -v apt-get >/dev/null; then
    echo "missing for $why: ${missing[*]} (Debian package names); install them, then rerun" >&2
    exit 1
fi
sudo=()
if ((EUID != 0)); then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        echo "missing for $why: ${missing[*]}; as root, run:" >&2
        echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
fi

echo ">> installing for $why (apt-get): ${missing[*]}"
# Another apt run (unattended upgrades on a new machine) may hold the lock for a while.
apt_options=(-o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0)
"${sudo[@]}" apt-get "${apt_options[@]}" update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_options[@]}" install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
