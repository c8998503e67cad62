#!/usr/bin/env bash
# The whole test suite: system packages, build, type-check the tests, lint, format check, then every test.
# PostgreSQL tests use RAMPART_TEST_DATABASE_URL when set, otherwise a throwaway server of their own.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-system-deps.sh
npm run build
npx tsc -p tsconfig.test.json
npx eslint .
npx prettier --check .
npx vitest run "$@"
