#!/usr/bin/env bash
# Builds the serving image the air-gapped way and runs it for real:
#   1. starts a Docker engine if none answers;
#   2. makes a local Python 3.11 base image without any registry (debootstrap Debian bookworm + python3,
#      then docker import), unless it exists already;
#   3. collects a wheelhouse of the service's dependencies and builds the image from it (--no-index);
#      builds the Prometheus image from Debian's package on the same base and waits for it to be healthy;
#   4. runs the image, waits for its HEALTHCHECK to report healthy, checks it runs without root and
#      without torch and serves every shipped model, POSTs real MIT-BIH beats and a WFDB record (the
#      strip worker and the context model), checks the labels, /metrics and the image size
#      (MAX_IMAGE_MB, 800), and cleans up.
#      Needs root, docker.io and debootstrap (Debian packages).
# Usage: scripts/docker-smoke.sh            (MIRROR=... to choose the Debian mirror; --help: this text)
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac
cd "$(dirname "$0")/.."
build=build
mkdir -p "$build"
base=ecg-base:bookworm
image=ecg-api:smoke
prometheus_image=ecg-prometheus:smoke
name=ecg-api-smoke-$$
mirror=${MIRROR:-http://deb.debian.org/debian}
max_mb=${MAX_IMAGE_MB:-800}  # the serving image holds no torch; it stays under this size
dockerd_pid=
say() { printf '[%5ss] %s\n' "$SECONDS" "$*"; }

cleanup() {
  docker rm -f "$name" "$name-prometheus" >/dev/null 2>&1 || true
  docker rmi -f "$image" "$prometheus_image" >/dev/null 2>&1 || true
  docker image prune -f --filter label=ecg.stage=venv >/dev/null 2>&1 || true  # the Dockerfile's build stage
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

# The base's label says how it was made; an older base (with apt's downloads, lists and docs: 140 MB
# more) is made again.
base_recipe=2
if [ "$(docker image inspect -f '{{index .Config.Labels "ecg.base.recipe"}}' "$base" 2>/dev/null)" != "$base_recipe" ]; then
  say "debootstrap bookworm with python3 -> $base"
  rm -rf "$build/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$build/rootfs" "$mirror" \
    >"$build/debootstrap.log" 2>&1 || { tail -20 "$build/debootstrap.log"; exit 1; }
  # What an image never reads: the downloaded packages, the package lists (apt-get update fetches
  # them again), documentation and message translations.
  rm -rf "$build"/rootfs/var/cache/apt/archives/*.deb "$build"/rootfs/var/lib/apt/lists/* \
         "$build"/rootfs/usr/share/doc/* "$build"/rootfs/usr/share/man/* "$build"/rootfs/usr/share/locale/*
  tar -C "$build/rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' -c "LABEL ecg.base.recipe=$base_recipe" - "$base" >/dev/null
  rm -rf "$build/rootfs"
fi

say "wheelhouse of the service's dependencies"
python3 -m pip wheel --quiet --wheel-dir "$build/wheelhouse" . "setuptools>=68"
rm -f "$build"/wheelhouse/ecg_odenet-*.whl  # the image builds the project itself, from source

say "docker build through the wheelhouse (no index)"
docker build --quiet --build-arg BASE_IMAGE="$base" --build-arg WHEELHOUSE="$build/wheelhouse" -t "$image" . >/dev/null

say "docker build of Prometheus from Debian's package on $base"
docker build --quiet -f deploy/prometheus/Dockerfile --build-arg BASE_IMAGE="$base" -t "$prometheus_image" deploy >/dev/null
docker run -d --name "$name-prometheus" -v "$PWD/deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" \
  "$prometheus_image" >/dev/null
for _ in $(seq 60); do
  status=$(docker inspect -f '{{.State.Health.Status}}' "$name-prometheus")
  [ "$status" = healthy ] && break
  sleep 2
done
[ "$status" = healthy ] || { docker logs "$name-prometheus"; echo "Prometheus not healthy: $status"; exit 1; }
[ "$(docker exec "$name-prometheus" id -u)" != 0 ] || { echo "Prometheus runs as root"; exit 1; }
docker rm -f "$name-prometheus" >/dev/null

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
! docker exec "$name" python3 -c "import torch" 2>/dev/null || { echo "the serving image holds torch"; exit 1; }
shipped=$(ls models/*/card.json | wc -l)
served=$(curl -sf "http://127.0.0.1:$port/models" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["models"]))')
[ "$served" = "$shipped" ] || { echo "serves $served of the $shipped shipped models"; exit 1; }

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
size_mb=$(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f", $1/1e6}')
[ "$size_mb" -lt "$max_mb" ] || { echo "image is $size_mb MB, over $max_mb MB"; exit 1; }
say "image $image: healthy, non-root, no torch, $served models, labels '$labels', strip: $strip_beats beats ($strip_v V) by $strip_model, metrics counted; $size_mb MB (limit $max_mb)"
