#!/usr/bin/env bash
# The GPU checks on a GPU host that has neither Node nor npm (docs/gpu-host.md). scripts/device-pack.sh
# copies this file into the pack, build/device-pack/run.sh; on the GPU host, from a copy of the
# repository that carries the pack:
#
#   bash build/device-pack/run.sh
#
# It prints what the host has, unpacks the pack's Node, builds the CUDA probe and the native copy
# loop with the host's nvcc (cuda/Makefile's targets, or the commands make would run where make is
# missing), and runs dist/test/device/device-check.js, all within DEVICE_BUDGET_S (default 230 s).
#
#   DEVICE_SKIP_BUILD=1   no nvcc build: the probe is AUTOPILOT_CUDA_PROBE_LIBRARY, or the copy the
#                         packing machine built (prebuilt/)
#   NVCC                  the compiler (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc)
#   OUT                   when set, the output is also written to $OUT/device-run.txt
#   AUTOPILOT_NVML_LIBRARY, AUTOPILOT_CUDA_PROBE_LIBRARY, DEVICE_REFERENCE (the native loop),
#   DEVICE_NVML_RUNS, DEVICE_XID_LISTEN_MS: passed to device-check.js
set -uo pipefail

HERE=${BASH_SOURCE[0]%/*}
[[ $HERE == "${BASH_SOURCE[0]}" ]] && HERE=.
PACK=$(cd "$HERE" && pwd)
BUDGET_S=${DEVICE_BUDGET_S:-230}
BUILD_LIMIT_S=120

if [[ ! $BUDGET_S =~ ^[0-9]+$ ]] || ((BUDGET_S < 30)); then
  echo "run.sh: DEVICE_BUDGET_S must be a whole number of seconds, 30 or more, not '$BUDGET_S'" >&2
  exit 2
fi
if [[ ! -f $PACK/node.xz || ! -d $PACK/dist ]]; then
  echo "run.sh: $PACK is not a pack (no node.xz or dist/): build one with scripts/device-pack.sh" >&2
  exit 2
fi

# One line per fact; a missing tool is a fact, not an error.
tool() {
  local name=$1 path
  path=$(command -v "$name") && echo "$name: $path" || echo "$name: absent"
}

host_info() {
  echo "== host =="
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ), kernel: $(uname -srm)"
  if command -v nvidia-smi >/dev/null; then
    timeout 20 nvidia-smi -L || echo "nvidia-smi -L failed (exit $?)"
    timeout 20 nvidia-smi --query-gpu=index,name,driver_version,pci.bus_id,persistence_mode \
      --format=csv,noheader || echo "nvidia-smi --query-gpu failed (exit $?)"
  else
    echo "nvidia-smi: absent"
  fi
  local nvml
  nvml=$( (ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null) | grep -m1 'libnvidia-ml.so.1 ')
  echo "libnvidia-ml.so.1: ${nvml:+${nvml##*=> }}${nvml:-not in the loader cache}"
  if [[ -x $NVCC ]]; then
    echo "nvcc: $NVCC, $("$NVCC" --version | grep -m1 -o 'release [0-9.]*, V[0-9.]*')"
  else
    echo "nvcc: absent"
  fi
  local numa cpu
  numa=$(find /sys/devices/system/node -maxdepth 1 -name 'node[0-9]*' 2>/dev/null | wc -l)
  cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2-)
  echo "CPU:${cpu:- unknown}, $(nproc) CPUs, $numa NUMA nodes"
  tool ping
  tool dcgmi
  tool make
  tool node
}

unpack_node() {
  NODE_BIN=$PACK/bin/node
  if [[ ! -x $NODE_BIN ]]; then
    mkdir -p "$PACK/bin" || return 1
    if command -v xz >/dev/null; then
      xz -dc "$PACK/node.xz" >"$NODE_BIN.part" || return 1
    elif command -v python3 >/dev/null; then
      python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$PACK/node.xz" "$NODE_BIN.part" || return 1
    else
      echo "neither xz nor python3 is here to unpack node.xz" >&2
      return 1
    fi
    if command -v sha256sum >/dev/null; then
      (cd "$PACK" && sed 's| bin/node$| bin/node.part|' node.sha256 | sha256sum -c --quiet -) || return 1
    fi
    chmod +x "$NODE_BIN.part" && mv "$NODE_BIN.part" "$NODE_BIN" || return 1
  fi
  echo "node: $NODE_BIN $("$NODE_BIN" --version) (unpacked from the pack)"
}

# Sets PROBE and REFERENCE: built here with nvcc, else the packing machine's copies.
build_probe() {
  echo "== build =="
  PROBE=${AUTOPILOT_CUDA_PROBE_LIBRARY:-}
  REFERENCE=${DEVICE_REFERENCE:-}
  local built=$PACK/build/cuda origin
  if [[ ${DEVICE_SKIP_BUILD:-} == 1 ]]; then
    echo "nvcc build skipped (DEVICE_SKIP_BUILD=1)"
  elif [[ ! -x $NVCC ]]; then
    echo "nvcc build skipped: no nvcc (set NVCC)"
  else
    local started=$SECONDS
    if command -v make >/dev/null; then
      timeout "$BUILD_LIMIT_S" make -s -C "$PACK/cuda" NVCC="$NVCC" all reference
    else
      echo "no make: running the commands cuda/Makefile gives (cuda/build-commands.sh)"
      (cd "$PACK/cuda" && NVCC=$NVCC timeout "$BUILD_LIMIT_S" bash -e build-commands.sh)
    fi
    local rc=$?
    echo "nvcc build: exit $rc after $((SECONDS - started)) s (limit ${BUILD_LIMIT_S} s)"
  fi
  for pair in "PROBE libautopilot-probe.so" "REFERENCE copy-reference"; do
    local var=${pair% *} file=${pair#* }
    [[ -n ${!var} ]] && continue
    if [[ -f $built/$file ]]; then
      printf -v "$var" '%s' "$built/$file"
      origin="built here"
    elif [[ -f $PACK/prebuilt/$file ]]; then
      printf -v "$var" '%s' "$PACK/prebuilt/$file"
      origin="built on the packing machine ($(cat "$PACK/prebuilt/nvcc-version" 2>/dev/null))"
    else
      printf -v "$var" '%s' "$built/$file"
      origin="missing"
    fi
    echo "$file: ${!var} ($origin)"
  done
}

run_checks() {
  echo "== checks =="
  local left=$((BUDGET_S - SECONDS - 5))
  if ((left < 20)); then
    echo "device-check.js not run: only $left s of the ${BUDGET_S} s budget left"
    return 1
  fi
  echo "device-check.js: budget $left s"
  AUTOPILOT_CUDA_PROBE_LIBRARY=$PROBE DEVICE_REFERENCE=$REFERENCE DEVICE_CHECK_BUDGET_S=$((left - 5)) \
    UV_THREADPOOL_SIZE=${UV_THREADPOOL_SIZE:-16} \
    timeout -k 5 "$left" "$NODE_BIN" "$PACK/dist/test/device/device-check.js"
  local rc=$?
  case $rc in
    0) ;;
    124 | 137) echo "device-check.js: killed (exit $rc): it timed out or killed itself after a hang" ;;
    *) echo "device-check.js: exit $rc" ;;
  esac
  return "$rc"
}

main() {
  NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
  host_info
  unpack_node || {
    echo "run.sh: could not unpack node from $PACK/node.xz"
    return 2
  }
  build_probe
  run_checks
  local rc=$?
  echo "run.sh: done in $SECONDS s, exit $rc"
  return "$rc"
}

if [[ -n ${OUT:-} ]]; then
  mkdir -p "$OUT"
  main 2>&1 | tee "$OUT/device-run.txt"
  exit "${PIPESTATUS[0]}"
fi
main
