"""Running train.py in a subprocess, as a user would, and reading what it prints."""
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def run_train(*args, check=True, env=None, launcher=(sys.executable,)):
    base = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    full_env = dict(base, HF_HUB_OFFLINE="1", PYTHONPATH=REPO, **(env or {}))
    proc = subprocess.run([*launcher, "train.py", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def accuracy(stdout):
    match = re.search(r"\* accuracy: ([\d.]+)%", stdout)
    assert match, stdout[-2000:]
    return float(match.group(1))


def error_line(proc):
    """The one ``error:`` line of a failed run (progress bars may precede it on stderr)."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def training_losses(stdout):
    """Per-step values of each loss term printed by Dassl's training loop: {name: [values]}."""
    losses = {}
    for line in stdout.splitlines():
        if line.startswith("epoch ["):
            for name, value in re.findall(r"(\w+) ([-\d.]+) \(", line):
                if name not in ("time", "data"):
                    losses.setdefault(name, []).append(float(value))
    return losses


def free_port():
    """A TCP port nobody listens on now (for a launcher's MASTER_PORT)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_launcher_env():
    """What a distributed launcher sets for a one-process run (DeepSpeed then runs on CPU with gloo)."""
    return dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))


def as_trainer_names_it(error, trainer: str) -> str:
    """A library ConfigError's message as ``trainer`` reports it: its fields named by their config keys."""
    from dassl.engine import TRAINER_REGISTRY

    import trainers  # noqa: F401  (registers the trainers)

    return str(error.naming(TRAINER_REGISTRY.get(trainer).config_names()))
