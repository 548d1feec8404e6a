#!/usr/bin/env bash
# Make Docker usable on a bare Debian machine (CI, a fresh VM) and build the project image.
#
#   bash .ci/setup-docker.sh            install if missing, start dockerd, build the image
#   bash .ci/setup-docker.sh --no-image install if missing and start dockerd only
#
# Debian's own packages are used (docker.io is Docker 20.10 with the legacy builder,
# docker-compose is Compose v1): they are what an offline machine with only a Debian
# mirror can install, and the SageMaker SDK's local mode works with both.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build_image=1
[[ "${1:-}" == "--no-image" ]] && build_image=0

dockerd_log="${TMPDIR:-/tmp}/genkiln-dockerd.log"

log() { printf '[setup-docker] %s\n' "$*" >&2; }

sudo_if_needed() {
  if [[ "$(id -u)" -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

install_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 \
    || missing+=(docker-compose)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if ((${#missing[@]})); then
    log "installing ${missing[*]} from Debian's packages"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

start_dockerd() {
  if docker info >/dev/null 2>&1; then
    return 0
  fi
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    # No init system runs here (CI, containers): start the daemon in its own session so it
    # outlives this script and ignores the caller's terminal and signals.
    log "starting dockerd (log: $dockerd_log)"
    # Not through sudo_if_needed: a backgrounded function is a subshell that would linger.
    if [[ "$(id -u)" -eq 0 ]]; then
      setsid dockerd >"$dockerd_log" 2>&1 </dev/null &
    else
      # shellcheck disable=SC2024  # the log is the caller's own file, written as the caller
      sudo setsid dockerd >"$dockerd_log" 2>&1 </dev/null &
    fi
  fi
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && { log "dockerd is ready"; return 0; }
    sleep 1
  done
  log "dockerd did not answer within 60 s; last lines of its log:"
  tail -n 30 "$dockerd_log" >&2 || true
  return 1
}

install_packages
start_dockerd
if ((build_image)); then
  bash "$here/image.sh"
fi
