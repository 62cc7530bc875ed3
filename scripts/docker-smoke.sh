#!/usr/bin/env bash
# Builds the serving image the air-gapped way and runs it for real:
#   1. starts a Docker engine if none answers;
#   2. makes a local Python 3.11 base image without any registry (debootstrap Debian bookworm + python3,
#      then docker import), unless it exists already;
#   3. collects a wheelhouse of the service's dependencies and builds the image from it (--no-index);
#   4. runs the image, waits for its HEALTHCHECK to report healthy, POSTs real MIT-BIH beats and a WFDB
#      record (the strip worker and the context model), checks the labels and /metrics, and cleans up.
#      Needs root, docker.io and debootstrap (Debian packages).
# Usage: scripts/docker-smoke.sh            (MIRROR=... to choose the Debian mirror)
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
mkdir -p "$build"
base=ecg-base:bookworm
image=ecg-api:smoke
name=ecg-api-smoke-$$
mirror=${MIRROR:-http://deb.debian.org/debian}
dockerd_pid=
say() { printf '[%5ss] %s\n' "$SECONDS" "$*"; }

cleanup() {
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker rmi -f "$image" >/dev/null 2>&1 || true
  if [ -n "$dockerd_pid" ]; then kill "$dockerd_pid" 2>/dev/null || true; wait "$dockerd_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
  say "starting dockerd"
  dockerd >"$build/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { cat "$build/dockerd.log"; exit 1; }
fi

if ! docker image inspect "$base" >/dev/null 2>&1; then
  say "debootstrap bookworm with python3 -> $base"
  rm -rf "$build/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$build/rootfs" "$mirror" \
    >"$build/debootstrap.log" 2>&1 || { tail -20 "$build/debootstrap.log"; exit 1; }
  tar -C "$build/rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' - "$base" >/dev/null
  rm -rf "$build/rootfs"
fi

say "wheelhouse of the service's dependencies"
python3 -m pip wheel --quiet --wheel-dir "$build/wheelhouse" . "setuptools>=68"
rm -f "$build"/wheelhouse/ecg_odenet-*.whl  # the image builds the project itself, from source

say "docker build through the wheelhouse (no index)"
docker build --quiet --build-arg BASE_IMAGE="$base" --build-arg WHEELHOUSE="$build/wheelhouse" -t "$image" . >/dev/null

say "run and wait for healthy"
docker run -d --name "$name" -p 127.0.0.1::8000 "$image" >/dev/null
port=$(docker port "$name" 8000/tcp | head -n1 | sed 's/.*://')
for _ in $(seq 120); do
  status=$(docker inspect -f '{{.State.Health.Status}}' "$name")
  [ "$status" = healthy ] && break
  [ "$(docker inspect -f '{{.State.Running}}' "$name")" = true ] || { docker logs "$name"; exit 1; }
  sleep 2
done
[ "$status" = healthy ] || { docker logs "$name"; echo "container not healthy: $status"; exit 1; }
[ "$(docker exec "$name" id -u)" != 0 ] || { echo "container runs as root"; exit 1; }

say "POST real beats (N, V, F from record 208) to 127.0.0.1:$port"
answer=$(curl -sf "http://127.0.0.1:$port/predict" -H 'content-type: application/json' -d @examples/request.json)
labels=$(printf '%s' "$answer" | python3 -c 'import json,sys; print(" ".join(p["label"] for p in json.load(sys.stdin)["predictions"]))')
[ "$labels" = "N V F" ] || { echo "unexpected labels: $labels ($answer)"; exit 1; }
metrics=$(curl -sf "http://127.0.0.1:$port/metrics")  # whole body first: grep -q would cut curl off
grep -q 'ecg_beats_classified_total{label="V",model="odenet"} 1.0' <<<"$metrics" \
  || { echo "metrics do not count the beats"; exit 1; }

say "POST a WFDB record (2 minutes of record 208) to /predict/wfdb"
strip=$(curl -sf "http://127.0.0.1:$port/predict/wfdb" -F header=@tests/fixtures/mitdb/208.hea \
        -F signal=@tests/fixtures/mitdb/208.dat)
summary=$(printf '%s' "$strip" | python3 -c 'import json,sys; b=json.load(sys.stdin); print(b["model"], b["summary"]["n_beats"], b["summary"]["counts"]["V"])')
read -r strip_model strip_beats strip_v <<<"$summary"
[ "$strip_model" = context-odenet ] && [ "$strip_beats" -gt 150 ] && [ "$strip_v" -gt 30 ] \
  || { echo "unexpected strip answer: $summary"; exit 1; }
say "image $image: healthy, non-root, labels '$labels', strip: $strip_beats beats ($strip_v V) by $strip_model, metrics counted; $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')"
