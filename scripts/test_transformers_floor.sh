#!/usr/bin/env bash
# The LLM prompt decoder against the oldest transformers that requirements.txt allows.
# Decoder layers swallow unknown keywords, and transformers renamed the cache argument
# within 5.x (past_key_values -> cache): a wrong name is silently ignored. This runs the
# decoder's tests (cached decode == full forward) in a virtual environment that sees every
# package of the active environment (scripts/floor_env.sh) with transformers pinned to the floor.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
floor=$(sed -nE 's/^transformers>=([0-9.]+).*/\1/p' requirements.txt)
# One floor environment per active environment (its prefix's digest): each layers over its own packages.
env_id=$(python -c 'import hashlib, sys; print(hashlib.sha256(sys.prefix.encode()).hexdigest()[:12])')
venv=${FLOOR_VENV:-${TMPDIR:-/tmp}/llamp-transformers-$floor-$env_id}
bash scripts/floor_env.sh "$venv" >/dev/null
# With the kernels release that transformers asks for: a newer kernels (installed here for a newer
# transformers) breaks the floor's import.
"$venv/bin/python" -m pip install -q "transformers[hub-kernels]==$floor"
installed=$("$venv/bin/python" -c 'import transformers; print(transformers.__version__)')
echo "transformers floor: requirements say >=$floor, testing $installed"
# (the active environment's transformers is visible behind the floor's: a failed install would
# silently test the newer one instead)
"$venv/bin/python" -c "import sys; from packaging.version import Version as V; sys.exit(V('$installed') != V('$floor'))" \
    || { echo "error: $venv holds transformers $installed, not the floor $floor" >&2; exit 1; }
# (test_llm_families: where a family scales its embeddings moved within 5.x, Gemma's among them)
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_llm_decoder.py tests/test_llamp_model.py \
    tests/test_llm_families.py
