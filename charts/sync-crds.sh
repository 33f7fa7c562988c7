#!/usr/bin/env bash
# Copy the generated CRD (crds/, written by `kubetune crd`) into the chart's crds/ folder, which
# Helm installs before the templates when the CRD is absent (and never deletes).
# tests/chart/test_chart_crd.py fails when the copy drifts.
# Usage: bash charts/sync-crds.sh          (after regenerating crds/)
set -euo pipefail
cd "$(dirname "$0")/.."
cp crds/kubetune.io_finetunejobs.yaml charts/kubetune/crds/kubetune.io_finetunejobs.yaml
echo "charts/kubetune/crds/kubetune.io_finetunejobs.yaml <- crds/kubetune.io_finetunejobs.yaml"
