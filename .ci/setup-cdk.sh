#!/usr/bin/env bash
# CI: install the pinned AWS CDK CLI (package.json / package-lock.json) into
# node_modules/.bin/cdk, where tests/infra expects it. The CDK Python packages come from
# the `infra` extra of pyproject.toml; Docker is not needed (the deploy-cycle test runs
# against a moto server and publishes no image).
set -euo pipefail
cd "$(dirname "$0")/.."
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "setup-cdk: Node.js and npm are needed for the CDK CLI; installing from Debian"
  apt-get update -qq && apt-get install -y -qq nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 18 ]; then
  echo "setup-cdk: Node.js >= 18 is needed, found $(node --version)" >&2
  exit 1
fi

npm ci --no-audit --no-fund --loglevel=error
node_modules/.bin/cdk --version
