#!/usr/bin/env bash
# Copies the rules and dashboards into the Helm chart, which can only package files under its own
# folder. rules/ and dashboards/ are the sources; test/deploy/chart.test.ts fails when a copy is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
files=deploy/helm/autopilot/files
mkdir -p "$files/dashboards"
cp rules/autopilot.rules.yaml "$files/autopilot.rules.yaml"
rm -f "$files"/dashboards/*.json
cp dashboards/*.json "$files/dashboards/"
echo "sync-chart.sh: copied rules/autopilot.rules.yaml and dashboards/*.json into $files"
