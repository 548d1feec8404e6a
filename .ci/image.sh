#!/usr/bin/env bash
# Build the project image on a machine that cannot pull images (`make image`, CI).
#
# 1. The base: a Debian bookworm root made by debootstrap from the Debian mirror and turned
#    into an image with `docker import` (no registry needed). Built once, then reused.
# 2. The project image from the root Dockerfile on that base, with
#    - the CPU build of torch taken from a wheel on this disk when pip finds one
#      (copied into docker/wheels/, which git and the image's final stage ignore), and
#    - this host's extra CA certificates (Debian's /usr/local/share/ca-certificates/), so pip
#      inside the build can verify its index behind a TLS-intercepting proxy.
#
# Environment:
#   GENKILN_IMAGE       tag of the project image        (default genkiln:latest)
#   GENKILN_BASE_IMAGE  tag of the imported base image  (default genkiln-base:bookworm)
#   DEBIAN_MIRROR       mirror for debootstrap          (default: the one apt uses, else deb.debian.org)
#   TORCH_VARIANT       cpu | cuda                      (default cpu)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="${GENKILN_IMAGE:-genkiln:latest}"
base_image="${GENKILN_BASE_IMAGE:-genkiln-base:bookworm}"
variant="${TORCH_VARIANT:-cpu}"
torch_version="2.13.0"

log() { printf '[image] %s\n' "$*" >&2; }

docker info >/dev/null 2>&1 || bash "$root/.ci/setup-docker.sh" --no-image

apt_mirror() {
  # The mirror apt already uses reaches the Debian archive from this machine; fall back to
  # the public redirector.
  local uri
  uri="$(grep -hoE '^URIs:[[:space:]]*\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | awk '{print $2}' | grep -v security | head -n1 || true)"
  [[ -z "$uri" ]] && uri="$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
  echo "${uri:-http://deb.debian.org/debian}"
}

build_base() {
  if docker image inspect "$base_image" >/dev/null 2>&1; then
    log "base image $base_image exists"
    return 0
  fi
  local mirror rootfs started
  mirror="${DEBIAN_MIRROR:-$(apt_mirror)}"
  rootfs="$(mktemp -d /tmp/genkiln-rootfs.XXXXXX)"
  started=$SECONDS
  log "debootstrap bookworm from $mirror into $rootfs"
  # minbase + Python 3.11 (bookworm's python3, the same minor version as python:3.11-slim)
  # + venv (the Dockerfile builds a virtual environment) + CA certificates.
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror" >/tmp/genkiln-debootstrap.log 2>&1 || {
    tail -n 30 /tmp/genkiln-debootstrap.log >&2
    return 1
  }
  # What an image needs no copy of: package caches, documentation, apt lists.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' - "$base_image" >/dev/null
  rm -rf "$rootfs"
  log "base image $base_image imported in $((SECONDS - started)) s"
}

stage_context() {
  # Wheels: a CPU build of torch lying on this disk (pip's find-links); --no-index keeps pip
  # from downloading the multi-GB CUDA build when none lies here.
  rm -f "$root"/docker/wheels/*.whl
  if [[ "$variant" == "cpu" ]]; then
    if python3 -m pip download --quiet --no-deps --no-index -d "$root/docker/wheels" \
      "torch==$torch_version" >/dev/null 2>&1 && ls "$root"/docker/wheels/torch-*+cpu-*.whl >/dev/null 2>&1; then
      log "using $(basename "$root"/docker/wheels/torch-*.whl) from this disk"
    else
      rm -f "$root"/docker/wheels/*.whl
      log "no local CPU torch wheel: the build takes torch from the PyTorch CPU index"
    fi
  fi
  # Extra CA certificates of this host (corporate TLS proxies).
  rm -f "$root"/docker/certs/*.crt
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/docker/certs/"
    log "copied $(find "$root/docker/certs" -name "*.crt" | wc -l) extra CA certificate(s) into the build"
  fi
}

build_base
stage_context
started=$SECONDS
log "building $image (TORCH_VARIANT=$variant) on $base_image"
# DOCKER_BUILDKIT=0: the legacy builder is what Debian's Docker 20.10 has without buildx;
# the Dockerfile uses nothing that needs BuildKit.
DOCKER_BUILDKIT=0 docker build \
  --build-arg "BASE_IMAGE=$base_image" \
  --build-arg "TORCH_VARIANT=$variant" \
  -t "$image" "$root"
log "built $image in $((SECONDS - started)) s; size $(docker image inspect -f '{{.Size}}' "$image" \
  | awk '{printf "%.0f MB", $1 / 1e6}')"
