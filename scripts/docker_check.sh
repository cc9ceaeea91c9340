#!/usr/bin/env bash
# Check an image built by scripts/build_image.sh and time a container from
# start to its first image, with the image's numba cache (warm) and without it
# (cold: NUMBA_CACHE_DIR pointed at an empty folder, so every kernel compiles,
# as in an image whose kernels were only imported at build time).
#
#   scripts/docker_check.sh [IMAGE]      # default onepfrac:latest; REPEATS=5
#
# Prints the image size, the medians, and the numba cache events of one warm
# render as root and one as another user (loaded: machine code read from the
# cache; saved: a kernel compiled in the container).
set -euo pipefail

image=${1:-onepfrac:latest}
repeats=${REPEATS:-5}
render=(fracbuild render --L 1 --no-progress)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '[containers]\ndefault_ulimits = []\n' > "$work/containers.conf"
export CONTAINERS_CONF=$work/containers.conf
pod() { podman --runtime runc --cgroup-manager cgroupfs "$@"; }
mkdir -p "$work/data"
chmod 777 "$work/data"

seconds() {  # wall seconds of one command, its output discarded
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN {printf "%.2f\n", b - a}'
}
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo "image $image: $(pod image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')"
echo "podman run, nothing else (true): $(for i in $(seq "$repeats"); do seconds pod run --rm "$image" true; done | median) s"

warm=() cold=()
for i in $(seq "$repeats"); do  # alternated, so that load on the machine hits both alike
    warm+=("$(seconds pod run --rm -v "$work/data:/data" "$image" "${render[@]}" --out "/data/warm-$i")")
    cold+=("$(seconds pod run --rm -v "$work/data:/data" -e NUMBA_CACHE_DIR=/tmp/empty-cache "$image" \
        "${render[@]}" --out "/data/cold-$i")")
done
echo "start to first image, warm (the image's cache): $(printf '%s\n' "${warm[@]}" | median) s  [${warm[*]}]"
echo "start to first image, cold (compiles):          $(printf '%s\n' "${cold[@]}" | median) s  [${cold[*]}]"

cache_events() {  # OUT [PODMAN_RUN_OPTION...]: counts of one render's "data loaded" / "data saved" lines
    local out=$1
    shift
    pod run --rm -v "$work/data:/data" -e NUMBA_DEBUG_CACHE=1 "$@" "$image" "${render[@]}" --out "/data/$out" 2>&1 |
        awk '/^\[cache\] data loaded/ {l++} /^\[cache\] data saved/ {s++} END {printf "loaded %d, saved %d\n", l, s}'
}
echo "numba cache, warm render as root:      $(cache_events events-root)"
echo "numba cache, warm render as uid 1000:  $(cache_events events-user -u 1000:1000)"
echo "numba cache, cold render:              $(cache_events events-cold -e NUMBA_CACHE_DIR=/tmp/empty-cache)"
echo "owner of the uid 1000 render's shards: uid $(stat -c %u "$work/data/events-user/manifest.json")"
