#!/usr/bin/env bash
# The whole suite: type check, lint, then every unit, cross-layer and end-to-end test.
# Runs under `npm test`, so node_modules/.bin (and with it Node 24 from the `node` package) is first on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
node scripts/check-node-version.js
echo "== typecheck"; tsc --noEmit
echo "== lint"; biome check .
echo "== tests"
node --test --test-concurrency=2 --test-timeout=600000 'src/**/*.test.ts' 'test/**/*.test.ts' 'bench/**/*.test.ts'
