#!/usr/bin/env bash
# Build the Docker image with podman where no container registry is reachable:
# the base image is bootstrapped from Debian's packages (bookworm, whose python3
# is 3.11) and imported, then the Dockerfile is built on it. Needs root and
#   apt-get install -y podman runc mmdebstrap
#
#   scripts/build_image.sh                      # onepfrac:latest, the builder (s3 extra)
#   EXTRAS='[train,s3]' scripts/build_image.sh onepfrac:train
#   NUMBA_CPU=generic scripts/build_image.sh    # kernels warm on any x86-64 CPU
#
# Then run it with the same podman options (printed at the end). Environment:
#   BASE      base image name; bootstrapped only if podman does not have it
#             [default: localhost/onepfrac-base:bookworm]
#   MIRROR    Debian mirror [default: http://deb.debian.org]
#   EXTRAS, NUMBA_CPU: the Dockerfile's build arguments [default: [s3], host]
#   CA_BUNDLE a CA bundle pip needs behind a TLS-intercepting proxy, mounted for
#             the build only, never copied into the image
#             [default: /etc/ssl/certs/ca-certificates.crt when it exists]
set -euo pipefail

image=${1:-onepfrac:latest}
base=${BASE:-localhost/onepfrac-base:bookworm}
mirror=${MIRROR:-http://deb.debian.org}
extras=${EXTRAS:-[s3]}
numba_cpu=${NUMBA_CPU:-host}
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
repo=$(cd "$(dirname "$0")/.." && pwd)

for tool in podman runc mmdebstrap; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found (apt-get install -y podman runc mmdebstrap)" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Podman's defaults fail in a container without cgroup delegation or raisable
# ulimits (as in many CI runners and sandboxes): runc with cgroupfs, and no
# default ulimits.
printf '[containers]\ndefault_ulimits = []\n' > "$work/containers.conf"
export CONTAINERS_CONF=$work/containers.conf
pod() { podman --runtime runc --cgroup-manager cgroupfs "$@"; }

if ! pod image exists "$base"; then
    echo "bootstrapping $base from Debian bookworm ($mirror)" >&2
    # minbase + python3 and its venv module; docs, man pages and translations
    # are left out to keep the image small.
    mmdebstrap --variant=minbase \
        --include=python3,python3-venv,ca-certificates \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        bookworm "$work/base.tar" \
        "deb $mirror/debian bookworm main" \
        "deb $mirror/debian bookworm-updates main" \
        "deb $mirror/debian-security bookworm-security main"
    # An imported file system has no configuration: give it the PATH and
    # locale that python images have.
    pod import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        "$work/base.tar" "$base"
    rm -f "$work/base.tar"
fi

build_args=(--build-arg "BASE=$base" --build-arg "EXTRAS=$extras" --build-arg "NUMBA_CPU=$numba_cpu")
if [[ -f $ca_bundle ]]; then
    build_args+=(--volume "$ca_bundle:/run/build-ca.crt:ro" --build-arg PIP_CERT=/run/build-ca.crt)
fi
# The host network: pip reaches the package index the way this machine does.
pod build --network host "${build_args[@]}" --tag "$image" "$repo"

pod image ls "$image"
cat >&2 <<EOF
built $image; run it with
  CONTAINERS_CONF=<a file with: [containers] default_ulimits = []> \\
  podman --runtime runc --cgroup-manager cgroupfs run --rm -v "\$PWD/data:/data" $image \\
      fracbuild render --delta 0.1 --L 1000 --out /data/shards
EOF
