#!/usr/bin/env bash
# Make (or refresh) a virtual environment at $1 that sees every package of the active Python environment
# (the system interpreter, a venv, a virtualenv or a conda env), with its own site-packages in front, so
# that what is installed into it (the floor's transformers) shadows only those packages.
#
#   bash scripts/floor_env.sh DIR      prints DIR/bin/python
#
# `python -m venv --system-site-packages` alone is not enough: run from inside a virtual environment it
# builds on the base interpreter, whose "system" packages are not the active environment's. So the new
# environment also gets a .pth file that adds the active environment's site-packages folders (with their
# own .pth files: editable installs) after its own.
set -euo pipefail
venv=${1:?usage: floor_env.sh DIR}
if [ ! -x "$venv/bin/python" ]; then
    python -m venv --system-site-packages "$venv"
fi
# The active environment's site folders that the base interpreter does not already provide.
python - "$venv" <<'PY'
import os
import site
import subprocess
import sys

venv = sys.argv[1]
base = set(site.getsitepackages([sys.base_prefix]))
active = [d for d in site.getsitepackages() if d not in base and os.path.isdir(d)]
purelib = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                          "import sysconfig; print(sysconfig.get_path('purelib'))"],
                         check=True, capture_output=True, text=True).stdout.strip()
lines = [f"import site; site.addsitedir({d!r})" for d in active]
tmp = os.path.join(purelib, "active-environment.pth.tmp")
with open(tmp, "w") as f:  # rewritten on every run: the active environment may have changed
    f.write("".join(line + "\n" for line in lines))
os.replace(tmp, os.path.join(purelib, "active-environment.pth"))
PY
echo "$venv/bin/python"
