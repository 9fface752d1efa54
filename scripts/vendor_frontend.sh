#!/usr/bin/env bash
# Vendor the page's two libraries from npm into frontend/vendor/, as plain files, so the
# page keeps no build step and works offline from any static host:
#   marked     Markdown → HTML
#   DOMPurify  HTML sanitizer (defence in depth behind the page's own escaping)
# Each comes with its licence. `make vendor-frontend` runs this; the versions are pinned
# here, and `npm pack` checks each tarball against the registry's integrity hash.
set -euo pipefail

MARKED_VERSION=18.2.1
DOMPURIFY_VERSION=3.5.0

root="$(cd "$(dirname "$0")/.." && pwd)"
vendor="$root/frontend/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

command -v npm >/dev/null || { echo "npm is needed to vendor the page's libraries" >&2; exit 1; }
(cd "$work" && npm pack --silent "marked@$MARKED_VERSION" "dompurify@$DOMPURIFY_VERSION" >/dev/null)
mkdir -p "$work/marked" "$work/dompurify"
tar -xzf "$work/marked-$MARKED_VERSION.tgz" -C "$work/marked"
tar -xzf "$work/dompurify-$DOMPURIFY_VERSION.tgz" -C "$work/dompurify"

rm -rf "$vendor"
mkdir -p "$vendor"
cp "$work/marked/package/lib/marked.umd.js" "$vendor/marked.umd.js"
cp "$work/marked/package/LICENSE" "$vendor/marked.LICENSE"
cp "$work/dompurify/package/dist/purify.min.js" "$vendor/purify.min.js"
for licence in "$work"/dompurify/package/LICENSE*; do
    cp "$licence" "$vendor/dompurify.$(basename "$licence")"
done
cat >"$vendor/README.md" <<EOF
Third-party files the page loads, copied from npm by \`make vendor-frontend\`
(scripts/vendor_frontend.sh); not edited by hand.

| file | package | licence |
|---|---|---|
| marked.umd.js | marked $MARKED_VERSION | MIT (marked.LICENSE*) |
| purify.min.js | dompurify $DOMPURIFY_VERSION | Apache-2.0 or MPL-2.0 (dompurify.LICENSE*) |
EOF
echo ">> vendored marked $MARKED_VERSION and dompurify $DOMPURIFY_VERSION into $vendor"
