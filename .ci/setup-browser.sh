#!/usr/bin/env bash
# CI: install Debian's Chromium and its chromedriver for the playground's browser test
# (tests/e2e/test_playground_browser.py drives them through Selenium). Idempotent: does
# nothing when both are installed. No browser is downloaded from anywhere but Debian.
set -euo pipefail

log() { printf '[setup-browser] %s\n' "$*" >&2; }

sudo_if_needed() {
  if [[ "$(id -u)" -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if ((${#missing[@]})); then
  log "installing ${missing[*]} from Debian's packages"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
chromium --version 2>/dev/null | head -n 1
chromedriver --version | head -n 1
