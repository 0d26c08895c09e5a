#!/usr/bin/env bash
# Install what this project needs into the current Python environment.
# Dassl.pytorch is not on PyPI: it is installed from git (pinned) only when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

python -m pip install -q -r requirements.txt
if ! python -c "import dassl" >/dev/null 2>&1; then
    echo "Installing Dassl.pytorch from git"
    # --no-deps: its requirements pin old linters; what it imports is in requirements.txt.
    # --no-build-isolation: its setup.py imports numpy.
    python -m pip install -q --no-deps --no-build-isolation \
        "dassl @ git+https://github.com/KaiyangZhou/Dassl.pytorch@c61a1b570ac6333bd50fb5ae06aea59002fb20bb"
fi
