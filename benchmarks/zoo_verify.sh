#!/bin/bash
# Run the MONAI Model Zoo's own CI check, ci/verify_bundle.py (unchanged, from a checkout of Project-MONAI/model-zoo),
# in its strictest mode (-m full: directory, version/changelog, metadata schema, bundle properties, verify_net_in_out
# on inference.json, TorchScript export of models/model.pt) on each of our bundles, with the models/model.pt that the
# bundle's default command wrote.
#
# usage: bash benchmarks/zoo_verify.sh ZOO_CHECKOUT RUNS_DIR [OUTPUT_DIR]
#   ZOO_CHECKOUT  a model-zoo checkout (its ci/ folder is used as is)
#   RUNS_DIR      default-run outputs, one folder per bundle with models/model.pt
#                 (python benchmarks/time_default_runs.py --keep RUNS_DIR)
#   OUTPUT_DIR    where verify_zoo.csv and one log per bundle go (default: docs/results/zoo_verify)
# ZOO_COMMIT names the checkout's commit where ZOO_CHECKOUT is not a git work tree (e.g. from git archive).
# The schema of metadata.json is our offline copy (bundles/meta_schema.json): nothing is downloaded.
set -u
ZOO=$(cd "$1" && pwd); RUNS=$(cd "$2" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd); OUT=$(mkdir -p "${3:-$REPO/docs/results/zoo_verify}" && cd "${3:-$REPO/docs/results/zoo_verify}" && pwd)
PY=${PYTHON:-python}
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/models"; echo '{}' > "$WORK/models/model_info.json"; cp -r "$ZOO/ci" "$WORK/ci"
echo "bundle,exit_code,checks_passed,zoo_commit" > "$OUT/verify_zoo.csv"
COMMIT=${ZOO_COMMIT:-$(git -C "$ZOO" rev-parse --short HEAD 2>/dev/null || echo unknown)}
for B in aneurysm embryo_pu ips_histogram sperm_emd; do
  D="$WORK/models/$B"; mkdir -p "$D/models" "$D/eval"
  cp -r "$REPO/bundles/$B/configs" "$REPO/bundles/$B/docs" "$REPO/bundles/$B/LICENSE" "$D/"
  cp "$REPO/bundles/meta_schema.json" "$D/eval/schema.json"
  cp "$RUNS/$B/models/model.pt" "$D/models/"
  for f in model_meta.json feature_check.json; do [ -f "$RUNS/$B/models/$f" ] && cp "$RUNS/$B/models/$f" "$D/models/"; done
  (cd "$WORK" && $PY ci/verify_bundle.py -b "$B" -p "$WORK/models" -m full > "$OUT/$B.log" 2>&1); rc=$?
  passed=$(grep -cE "verified correctly|successfully" "$OUT/$B.log")
  echo "$B: verify_bundle.py exit $rc ($passed checks passed)"
  echo "$B,$rc,$passed,$COMMIT" >> "$OUT/verify_zoo.csv"
done
