"""train.py for the tests: its arguments (``train_argv``), the trainer it builds (``in_process_trainer``),
running it in a subprocess as a user would (``run_train``), and reading what it prints."""
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def train_argv(trainer, root, out, models, *opts, seed=1, config="demo", dataset="synthetic", subset="base",
               shots=2, epochs=2, print_freq=1, llm=None, flags=()):
    """train.py's arguments: ``trainer`` with ``configs/trainers/<trainer>/<config>.yaml`` on
    ``configs/datasets/<dataset>.yaml`` under ``root``, writing to ``out``, with ``models["clip"]``.

    By default the short run most tests make: 2 shots of the base classes, 2 epochs, every step printed
    (the tests read the losses). A setting given as None is left to the config files (``seed=None``: no
    fixed seed, as train.py without --seed). ``llm``: TRAINER.LLAMP.LLM_PATH, by default ``models["llm"]``
    for LLaMP and none for the others. ``flags`` (e.g. --eval-only) go before the config options; ``opts``
    (KEY VALUE ...) come last, so they override the settings above.
    """
    argv = ["--root", str(root)]
    if seed is not None:
        argv += ["--seed", str(seed)]
    argv += ["--trainer", trainer, "--dataset-config-file", f"configs/datasets/{dataset}.yaml",
             "--config-file", f"configs/trainers/{trainer}/{config}.yaml", "--output-dir", str(out), *flags,
             "MODEL.BACKBONE.PATH", models["clip"]]
    if llm is None and trainer == "LLaMP":
        llm = models["llm"]
    settings = {"TRAINER.LLAMP.LLM_PATH": llm, "DATASET.SUBSAMPLE_CLASSES": subset, "DATASET.NUM_SHOTS": shots,
                "OPTIM.MAX_EPOCH": epochs, "TRAIN.PRINT_FREQ": print_freq}
    for key, value in settings.items():
        if value is not None:
            argv += [key, str(value)]
    return [*argv, *opts]


# train_argv's settings for zero-shot CLIP as a user evaluates it: no fixed seed, the configs' data.
ZERO_SHOT_EVAL = dict(seed=None, subset=None, shots=None, epochs=None, print_freq=None, flags=("--eval-only",))


def in_process_trainer(trainer, root, out, models, *opts, rng_seed=None, **argv_options):
    """The Dassl trainer that train.py builds from ``train_argv(trainer, root, out, models, *opts,
    **argv_options)``, built in this process after seeding as train.py seeds (``rng_seed``: another seed
    than --seed, for another initialisation of the same run)."""
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    import train

    cfg = train.setup_cfg(train.parse_args(train_argv(trainer, root, out, models, *opts, **argv_options)))
    seed = cfg.SEED if rng_seed is None else rng_seed
    if seed >= 0:
        set_random_seed(seed)
    return build_trainer(cfg)


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
