#!/usr/bin/env bash
# Reproduce every shipped artefact in models/ from the raw MIT-BIH records.
# Two lanes of one thread each, so both cores of a small machine are busy.
# Usage: scripts/train-all.sh [DATA_DIR]   (default ../shared/data/mitdb)
set -euo pipefail
data=${1:-../shared/data/mitdb}
mkdir -p models/logs
# The context recipes were chosen by patient-grouped cross-validation inside DS1 (ecg-crossval, results
# in build/cv); where those results are here, each context card records them as its "selection".
selection=""
if compgen -G "build/cv/*.json" >/dev/null; then selection="--selection $(echo build/cv/*.json)"; fi
ode_recipe="--model odenet --preset context --set epochs=6 --set logit_bias=S:-0.5,V:-0.5,F:1"
resnet_recipe="--model resnet --preset context --set logit_bias=S:-1.5,V:-2.5,F:-1"
lane() {
  for job in "$@"; do
    set -- $job
    name=$1; shift
    ecg-train "$@" --data "$data" --threads 1 --out "models/$name" >"models/logs/$name.log" 2>&1
    echo "$name: $(tail -n 1 "models/logs/$name.log")"
  done
}
lane "odenet --model odenet --preset conv --split intra" \
     "odenet-ds1 --model odenet --preset conv --split inter" \
     "reference-odenet --model odenet --preset reference-cosine --split intra" \
     "reference-odenet-ds1 --model odenet --preset reference-cosine --split inter" \
     "context-odenet-ds1 $ode_recipe --split inter $selection" \
     "context-odenet $ode_recipe --split all $selection" &
lane "resnet --model resnet --preset conv --split intra" \
     "resnet-ds1 --model resnet --preset conv --split inter" \
     "reference-resnet --model resnet --preset reference-cosine --split intra" \
     "reference-resnet-ds1 --model resnet --preset reference-cosine --split inter" \
     "context-resnet-ds1 $resnet_recipe --split inter $selection" \
     "context-resnet $resnet_recipe --split all $selection" &
wait
