#!/usr/bin/env bash
# Set up mtrec with its dev tools, then run the linter, the type checker and the tests.
# This is the README's test command; CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
bash scripts/setup.sh --dev
# The web page's end-to-end test drives Debian's Chromium; install it where we can (CI runs
# as root). Elsewhere that one test is skipped, with the reason in pytest's summary.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing chromium for the page test"
  for attempt in 1 2; do
    if apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; then
      break
    fi
    echo "apt-get could not install chromium (attempt $attempt)"
  done
fi
echo "== ruff"; "$py" -m ruff check src tests benchmarks && "$py" -m ruff format --check src tests benchmarks
echo "== mypy"; "$py" -m mypy
echo "== pytest"
set +e
"$py" -m pytest "$@"
rc=$?
set -e
[ "$rc" -eq 5 ] && { echo "pytest collected no tests"; exit 1; }
exit "$rc"
