#!/usr/bin/env bash
# One virtual environment per peer server, beside the product's, with onnxruntime and numpy.
set -euo pipefail
cd "$(dirname "$0")/../.."
for peer in mlserver kserve litserve bentoml; do
  if [ ! -x "build/peers/$peer/bin/python" ]; then
    python3 -m venv "build/peers/$peer"
    "build/peers/$peer/bin/pip" install --quiet --upgrade pip
  fi
  extra=""
  # MLServer 1.7's inference workers call asyncio.get_event_loop(), which uvloop 0.22+ refuses.
  if [ "$peer" = mlserver ]; then extra="uvloop<0.22"; fi
  "build/peers/$peer/bin/pip" install --quiet "$peer" onnxruntime numpy $extra
  echo "$peer: $("build/peers/$peer/bin/pip" show "$peer" | grep ^Version)"
done
