#!/usr/bin/env bash
# Copy the generated CRD (crds/, written by `kubetune crd`) into the chart, which can only
# package files under its own folder. tests/chart/test_crd.py fails when the copy drifts.
# Usage: bash charts/sync-crds.sh          (after regenerating crds/)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p charts/kubetune/files/crds
cp crds/kubetune.io_finetunejobs.yaml charts/kubetune/files/crds/kubetune.io_finetunejobs.yaml
echo "charts/kubetune/files/crds/kubetune.io_finetunejobs.yaml <- crds/kubetune.io_finetunejobs.yaml"
