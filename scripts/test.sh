#!/usr/bin/env bash
# The project's one test entry point (README command 2, and CI through .ci/run):
# lint (ruff), format check, types (mypy), the layering contracts (import-linter), then the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[[ "$VENV" == /* ]] || VENV="$PWD/$VENV"  # VENV=/abs/path/.venv works too (a clone sharing a venv)
export PATH="$VENV/bin:$PATH"
echo "== ruff check"; ruff check pipeline tests examples
echo "== ruff format --check"; ruff format --check pipeline tests examples
echo "== mypy"; mypy
echo "== import contracts"; lint-imports --no-cache
echo "== pytest"; pytest "$@"
