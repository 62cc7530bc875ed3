#!/usr/bin/env bash
# Reproduce every shipped artefact in models/ from the raw MIT-BIH records.
# Two lanes of one thread each, so both cores of a small machine are busy.
# Exits non-zero, saying why on stderr, when the database is missing or incomplete and when any
# training run fails (its log, models/logs/NAME.log, is named and its last lines shown).
# Usage: scripts/train-all.sh [DATA_DIR]   (default ../shared/data/mitdb)
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
data=${1:-../shared/data/mitdb}
if ! command -v ecg-train >/dev/null; then
  echo "error: ecg-train is not on PATH; run this through 'make train', which installs it into .venv" >&2
  exit 2
fi

# The 48 records (training.data.RECORDS), each as header, signal and reference beat annotations.
missing=$(python - "$data" <<'EOF'
import sys
from pathlib import Path
from training.data import RECORDS
folder = Path(sys.argv[1])
print(" ".join(r for r in RECORDS if not all((folder / f"{r}.{ext}").is_file() for ext in ("hea", "dat", "atr"))))
EOF
)
if [[ -n $missing ]]; then
  count=$(wc -w <<<"$missing")
  {
    if (( count == 48 )); then
      echo "error: the MIT-BIH Arrhythmia Database is not in $data."
    else
      echo "error: the MIT-BIH Arrhythmia Database in $data is incomplete: $count of its 48 records missing or incomplete ($missing)."
    fi
    echo "Training needs all 48 records (.hea, .dat and .atr, 90 MB). On a machine with internet, download them:"
    echo "  python -c \"import wfdb; wfdb.dl_database('mitdb', 'data/mitdb')\""
    echo "(or copy that folder from a machine that has it), then run:"
    echo "  make train DATA=data/mitdb"
  } >&2
  exit 2
fi

mkdir -p models/logs
# The context recipes were chosen by patient-grouped cross-validation inside DS1 (ecg-crossval, results
# in build/cv); where those results are here, each context card records them as its "selection".
selection=""
if compgen -G "build/cv/*.json" >/dev/null; then selection="--selection $(echo build/cv/*.json)"; fi
ode_recipe="--model odenet --preset context --set epochs=6 --set logit_bias=S:-0.5,V:-0.5,F:1"
resnet_recipe="--model resnet --preset context --set logit_bias=S:-1.5,V:-2.5,F:-1"
# One lane runs its jobs in order and stops at the first that fails, saying which on stderr.
lane() {
  for job in "$@"; do
    set -- $job
    name=$1; shift
    if ! ecg-train "$@" --data "$data" --threads 1 --out "models/$name" >"models/logs/$name.log" 2>&1; then
      {
        echo "error: training $name failed; its log is models/logs/$name.log, ending:"
        tail -n 12 "models/logs/$name.log" | sed 's/^/  /'
      } >&2
      return 1
    fi
    echo "$name: $(tail -n 1 "models/logs/$name.log")"
  done
}
lane "odenet --model odenet --preset conv --split intra" \
     "odenet-ds1 --model odenet --preset conv --split inter" \
     "reference-odenet --model odenet --preset reference-cosine --split intra" \
     "reference-odenet-ds1 --model odenet --preset reference-cosine --split inter" \
     "context-odenet-ds1 $ode_recipe --split inter $selection" \
     "context-odenet $ode_recipe --split all $selection" &
ode_lane=$!
lane "resnet --model resnet --preset conv --split intra" \
     "resnet-ds1 --model resnet --preset conv --split inter" \
     "reference-resnet --model resnet --preset reference-cosine --split intra" \
     "reference-resnet-ds1 --model resnet --preset reference-cosine --split inter" \
     "context-resnet-ds1 $resnet_recipe --split inter $selection" \
     "context-resnet $resnet_recipe --split all $selection" &
resnet_lane=$!
# `wait` alone would report success whatever the lanes did: wait for each and keep its status.
failed=0
wait "$ode_lane" || failed=1
wait "$resnet_lane" || failed=1
if (( failed )); then
  echo "error: not every model was trained; see the errors above and models/logs/" >&2
  exit 1
fi
# Each context card's decision (calibration, S, V and F thresholds, S as N where the RR intervals meet
# the criteria of atrial fibrillation, review flag) is chosen on the pooled held-out beats of its
# recipe's cross-validation run (ecg-crossval --calibrate --af-criteria, into build/decisions);
# where those are here, it is recorded in the card and the card's figures are scored through it.
for job in "context-odenet-ds1 odenet" "context-odenet odenet" "context-resnet-ds1 resnet" "context-resnet resnet"; do
  set -- $job
  if [[ -f build/decisions/$2.json ]]; then
    ecg-evaluate "models/$1" --data "$data" --decision "build/decisions/$2.json" --write-card >>"models/logs/$1.log" 2>&1
    echo "$1: decision of build/decisions/$2.json recorded"
  fi
done
# The floor each context card must beat: the gradient-boosted tree on the same inputs, from its
# cross-validation run (ecg-crossval --model tree --out build/floor/tree.json) with the logit bias
# chosen on it, as the networks' was on theirs, recorded in the cards.
if [[ -f build/floor/tree.json ]]; then
  ecg-crossval --model tree --choose-bias build/floor/tree.json --out build/floor/rule-tree.json
  python scripts/tree-floor.py build/floor/tree.json models/context-odenet-ds1 models/context-resnet-ds1 \
    models/context-odenet models/context-resnet --rule build/floor/rule-tree.json --data "$data" --write-card
fi
