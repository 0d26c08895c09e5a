"""The transformers-floor check's environment (scripts/floor_env.sh) sees the active environment's packages.

Run from inside a virtual environment, `python -m venv --system-site-packages` builds on the base
interpreter, so a floor environment made that way alone would not see torch, Dassl or anything else the
user installed into their venv. Here the active environment is a fresh venv holding nothing but a marker
module; the floor environment made from inside it must import that marker from there.
"""
import os
import subprocess
import sys

from train_cli import REPO

MARKER = "llamp_floor_env_marker"


def run(cmd, **kwargs):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300, **kwargs)


def test_floor_environment_sees_the_active_virtual_environment(tmp_path):
    active = tmp_path / "active"
    run([sys.executable, "-m", "venv", "--without-pip", str(active)])
    active_python = str(active / "bin" / "python")
    purelib = run([active_python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip()
    with open(os.path.join(purelib, f"{MARKER}.py"), "w") as f:
        f.write("WHERE = 'active environment'\n")

    # As a user's shell has it after `source active/bin/activate`.
    env = dict(os.environ, VIRTUAL_ENV=str(active), PATH=f"{active / 'bin'}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)
    assert run(["python", "-c", "import sys; print(sys.prefix)"], env=env).stdout.strip() == str(active)
    floor = tmp_path / "floor"
    out = run(["bash", os.path.join(REPO, "scripts", "floor_env.sh"), str(floor)], env=env).stdout
    floor_python = out.strip().splitlines()[-1]
    assert floor_python == str(floor / "bin" / "python")

    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    seen = run([floor_python, "-c", f"import sys, {MARKER} as m; print(m.__file__); print(sys.prefix)"],
               env=clean).stdout.split()
    assert seen[0] == os.path.join(purelib, f"{MARKER}.py")
    assert seen[1] == str(floor)  # the floor environment's own prefix: what pip installs into it goes there

    # Its own site-packages come first: what the floor installs shadows the active environment's copy.
    order = run([floor_python, "-c", "import sys, sysconfig; p = sys.path; "
                 "print(p.index(sysconfig.get_path('purelib')) < p.index(sys.argv[1]))", purelib],
                env=clean).stdout.strip()
    assert order == "True"
