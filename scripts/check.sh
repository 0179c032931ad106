#!/usr/bin/env bash
# Set up mtrec with its dev tools, then run the linter, the type checker and the tests.
# This is the README's test command; CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
bash scripts/setup.sh --dev
echo "== ruff"; "$py" -m ruff check src tests benchmarks && "$py" -m ruff format --check src tests benchmarks
echo "== mypy"; "$py" -m mypy
echo "== pytest"
set +e
"$py" -m pytest "$@"
rc=$?
set -e
[ "$rc" -eq 5 ] && { echo "pytest collected no tests"; exit 1; }
exit "$rc"
