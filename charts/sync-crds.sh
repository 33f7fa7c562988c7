#!/usr/bin/env bash
# Copy the generated CRDs (crds/, written by `kubetune crd` and `kubetune crd --kind FineTuneSweep`) into
# the chart's crds/ folder, which Helm installs before the templates when a CRD is absent (and never deletes).
# tests/chart/test_chart_crd.py fails when a copy drifts.
# Usage: bash charts/sync-crds.sh          (after regenerating crds/)
set -euo pipefail
cd "$(dirname "$0")/.."
for name in kubetune.io_finetunejobs.yaml kubetune.io_finetunesweeps.yaml; do
  cp "crds/$name" "charts/kubetune/crds/$name"
  echo "charts/kubetune/crds/$name <- crds/$name"
done
