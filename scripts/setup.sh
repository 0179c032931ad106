#!/usr/bin/env bash
# Install mtrec into the current Python environment (a venv if one is active).
#
#   bash scripts/setup.sh          # mtrec with what the README and tutorial use: the
#                                  # service (serve) and DataFrames (frames)
#   bash scripts/setup.sh --lean   # mtrec and its core dependencies only
#   bash scripts/setup.sh --dev    # everything, plus the test and lint tools
#
# PyTorch: a torch that is already installed (CPU or CUDA) is kept as it is; mtrec
# asks only for torch>=2.0. With no torch at all, the CPU build of torch 2.13.0 is
# installed first (set MTREC_TORCH_INDEX_URL, e.g. to PyTorch's CPU wheel index, to
# choose where pip looks for it). pip's own progress is shown: with an empty cache the
# first install downloads several hundred MB.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
pip=("$py" -m pip install --disable-pip-version-check --progress-bar on)
if "$py" -c "import torch" 2>/dev/null; then
  echo "mtrec setup: keeping the installed torch $("$py" -c 'import torch; print(torch.__version__)')"
else
  echo "mtrec setup: installing torch 2.13.0 (CPU build)"
  "${pip[@]}" "torch==2.13.0" ${MTREC_TORCH_INDEX_URL:+--index-url "$MTREC_TORCH_INDEX_URL"}
fi
case "${1:-}" in
  --lean) extras="" ;;
  --dev) extras="[dev]" ;;
  "") extras="[serve,frames]" ;;
  *) echo "mtrec setup: unknown option ${1} (--lean, --dev or none)" >&2; exit 2 ;;
esac
echo "mtrec setup: installing mtrec${extras} from $(pwd)"
"${pip[@]}" -e ".${extras}"
command -v pyenv >/dev/null && pyenv rehash 2>/dev/null || true  # expose the mtrec command under pyenv
echo "mtrec setup: $("$py" -m mtrec --help >/dev/null && echo ready) ($("$py" -c 'import mtrec; print(mtrec.__version__)'))"
