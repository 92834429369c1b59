#!/usr/bin/env bash
# The whole suite: type check, lint, then every unit, cross-layer and end-to-end test.
# Runs under `npm test`, so node_modules/.bin (and with it Node 24 from the `node` package) is first on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
node scripts/check-node-version.js
# The cluster tests run real etcd members (Debian's etcd-server); install it when missing.
if [ ! -x "${CARELEDGER_ETCD_BIN:-/usr/bin/etcd}" ]; then
  echo "== installing etcd-server (Debian)"
  SUDO=""; if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q etcd-server >/dev/null || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q etcd-server >/dev/null; }
fi
echo "== typecheck"; tsc --noEmit
echo "== lint"; biome check .
echo "== tests"
node --test --test-concurrency=2 --test-timeout=600000 'src/**/*.test.ts' 'test/**/*.test.ts' 'bench/**/*.test.ts'
