#!/usr/bin/env bash
# Installs what Autopilot needs on a Debian 12 machine, then the npm packages (npm ci).
#   scripts/install.sh          what the exporter needs to run: ping, the npm packages, and the CUDA
#                               probe library where nvcc exists
#   scripts/install.sh --test   also what the tests need: promtool (Debian's prometheus package)
#                               and iproute2 (network namespaces); gcc and make build the C fakes;
#                               helm for the chart tests (scripts/get-helm.sh, build/tools/helm);
#                               chromium for the status page's browser tests (puppeteer-core drives it)
#   scripts/install.sh --bench  the test set plus Debian's prometheus-node-exporter, the reference
#                               bench/compare.ts scrapes beside the exporter
# Debian packages are installed only when missing, so a prepared machine is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=run
case "${1:-}" in
  "") ;;
  --test) mode=test ;;
  --bench) mode=bench ;;
  *) echo "usage: scripts/install.sh [--test | --bench]" >&2; exit 2 ;;
esac

if ! command -v node >/dev/null 2>&1; then
  echo "install.sh: Node.js 20.19 or newer is required and was not found (Debian 12's own nodejs is 18)." >&2
  exit 1
fi
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>20||(a===20&&b>=19)?0:1)'; then
  echo "install.sh: Node.js 20.19 or newer is required; this is $(node --version)." >&2
  exit 1
fi

packages=(iputils-ping iperf3)
if [ "$mode" != run ]; then
  packages+=(iproute2 prometheus prometheus-alertmanager gcc make unzip openssl chromium)
fi
if [ "$mode" = bench ]; then
  packages+=(prometheus-node-exporter)
fi
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install.sh: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

npm ci --no-audit --no-fund --loglevel=error

if [ "$mode" != run ]; then
  scripts/get-helm.sh
fi

# The CUDA probe library (pciebw, gpumem) needs nvcc; without it those checks say SKIP.
if command -v nvcc >/dev/null 2>&1; then
  make -s -C cuda
else
  echo "install.sh: nvcc not found: the CUDA probe library is not built, pciebw and gpumem will say SKIP"
fi
