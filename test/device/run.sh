#!/usr/bin/env bash
# On a GPU host: builds the CUDA probe and the native reference with nvcc, then runs the GPU checks
# against the real libnvidia-ml and CUDA. Needs the project folder as `npm ci && npm run build`
# left it (node_modules for koffi, dist/) and a Node binary: NODE=/path/to/node test/device/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
NODE=${NODE:-node}
make -s -C cuda
make -s -C cuda reference
"$NODE" dist/test/device/device-check.js
