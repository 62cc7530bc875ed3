#!/usr/bin/env bash
# Reproduce every shipped artefact in models/ from the raw MIT-BIH records.
# Two lanes of one thread each, so both cores of a small machine are busy.
# Usage: scripts/train-all.sh [DATA_DIR]   (default ../shared/data/mitdb)
set -euo pipefail
data=${1:-../shared/data/mitdb}
mkdir -p models/logs
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
     "reference-odenet-ds1 --model odenet --preset reference-cosine --split inter" &
lane "resnet --model resnet --preset conv --split intra" \
     "resnet-ds1 --model resnet --preset conv --split inter" \
     "reference-resnet --model resnet --preset reference-cosine --split intra" \
     "reference-resnet-ds1 --model resnet --preset reference-cosine --split inter" &
wait
