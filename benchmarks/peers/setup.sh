#!/usr/bin/env bash
# One virtual environment per peer server, beside the product's, with onnxruntime and numpy.
set -euo pipefail
cd "$(dirname "$0")/../.."
for peer in mlserver kserve litserve bentoml; do
  if [ ! -x "build/peers/$peer/bin/python" ]; then
    python3 -m venv "build/peers/$peer"
    "build/peers/$peer/bin/pip" install --quiet --upgrade pip
  fi
  "build/peers/$peer/bin/pip" install --quiet "$peer" onnxruntime numpy
  echo "$peer: $("build/peers/$peer/bin/pip" show "$peer" | grep ^Version)"
done
