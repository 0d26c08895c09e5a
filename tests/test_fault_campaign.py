"""Killed anywhere, nothing lost: train.py and the cache build are killed (SIGKILL) at seeded moments, in
the middle of their writes and between them, and run again with the same command until they finish.

A campaign: the uninterrupted run first (the reference, moved aside so that the campaign runs in the
same folders and writes the same paths), then kills, each followed by the same command again. The kills
come from the write helper's fault plan (llamp/atomic_files.py: at the Nth write of the run, halfway
through the temporary file, before or after its rename) or from a timer at a random moment; the helper's
write log says which file was being written when a kill landed. At each kill point the test records what
is on disk and checks that every file the code reads back is whole and the same as the reference's
(nothing half-written), and that every file that was whole before is still there (nothing lost); at the
end, that the weights and the accuracy (the cache's files) are those of the reference, bit for bit.

LLAMP_FAULT_CAMPAIGN=long runs the long mode (CoOp, LLaMP and the build, at least 50 kills inside
writes, and kills by a timer besides; a quarter of an hour) and prints a table of its figures; otherwise
the CI mode: CoOp only, at least 5 kills inside writes (the plan's: the same every time).
LLAMP_FAULT_SEED changes the seed. Then: a full or read-only output folder, a damaged checkpoint or
cache file, and the helper bypassed (the checks then see the damage).
"""
import errno
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from llm_prompts_cli import NUM_TEMPLATES, build_argv
from train_cli import LAUNCHER_VARS, REPO, train_argv

from llamp.atomic_files import PLAN_VARIABLE, set_fault_plan
from llamp.errors import ConfigError
from llamp.knowledge_cache.files import DESCRIPTIONS_FILE, METADATA_FILE, kv_file_name, read_metadata
from llamp.knowledge_cache.reader import KnowledgeCache
from llamp.knowledge_cache.safetensors_files import read_safetensors_header
from llm_prompts.descriptions import read_descriptions
from trainers.checkpoint import LATEST_FILE, epoch_file_name, load_checkpoint

LONG = os.environ.get("LLAMP_FAULT_CAMPAIGN", "") == "long"
SEED = int(os.environ.get("LLAMP_FAULT_SEED", "0"))
KILL_STAGES = ("kill-halfway", "kill-before-rename", "kill-after-rename")
TEMPORARY = re.compile(r"\..+\.(tmp|old)$")  # what a killed write leaves beside its target (never read)
EPOCH_FILE = re.compile(r"model\.pth\.tar-(\d+)")
FEWSHOT = "split_fewshot"


# ---------------------------------------------------------------- running a command, killing it


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    inside: str | None  # the file being written when the run was killed (None: between writes)
    writes: list[str]  # the files it wrote, in order


def run_command(argv, work: Path, plan: str = "", kill_after: float | None = None) -> Run:
    """``python argv`` from the repository with the fault ``plan``, killed after ``kill_after`` seconds."""
    log = work / f"writes-{time.monotonic_ns()}.log"
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=REPO, **{PLAN_VARIABLE: ",".join(filter(None, [plan, f"log={log}"]))})
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.kill()  # SIGKILL
        out, err = proc.communicate()
    seconds = time.monotonic() - start
    begun, ended = {}, set()
    for line in log.read_text().splitlines() if log.exists() else []:
        word, number, *path = line.split(" ", 2)
        if word == "begin":
            begun[number] = path[0]
        else:
            ended.add(number)
    log.unlink(missing_ok=True)
    open_writes = [path for number, path in begun.items() if number not in ended]
    return Run(proc.returncode, out, err, seconds, open_writes[-1] if open_writes else None, list(begun.values()))


def results(stdout: str) -> list[str]:
    """The evaluation's lines (``* accuracy: ...``)."""
    return [line for line in stdout.splitlines() if line.startswith("* ")]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(folders) -> dict[str, Path]:
    found = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")) if Path(folder).exists() else []:
            if path.is_file():
                found[str(path)] = path
    return found


def same(a, b) -> bool:
    """Equal checkpoints: tensors bit for bit, everything else by value."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype \
            and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


# ---------------------------------------------------------------- what each command leaves on disk


class Scenario:
    """A command run in ``work/run`` (its data root and output), the reference kept in ``work/reference``."""

    name: str
    pristine: Path  # the data root before any run

    def __init__(self, work: Path):
        self.work = work
        self.run_dir = work / "run"
        self.reference_dir = work / "reference"

    def fresh(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.copytree(self.pristine, self.run_dir / "root", symlinks=True)

    def reference_path(self, path: str) -> Path:
        return self.reference_dir / Path(path).relative_to(self.run_dir)

    def argv(self) -> list[str]:
        raise NotImplementedError

    def watched(self) -> list[Path]:
        """The folders the command writes to."""
        raise NotImplementedError

    def damage(self, path: Path) -> str | None:
        """What is wrong with a file the command wrote (None: it is whole and the reference's)."""
        raise NotImplementedError

    def writes_left(self) -> int:
        """At least how many writes the next run makes (its first N may be killed for sure)."""
        raise NotImplementedError

    def final_differences(self, run: Run, reference_stdout: str) -> list[str]:
        raise NotImplementedError


class Training(Scenario):
    def __init__(self, work: Path, trainer: str, model_folder: str, pristine: Path, models, epochs: int):
        super().__init__(work)
        self.name, self.model_folder, self.pristine = trainer, model_folder, pristine
        self.models, self.epochs = models, epochs

    def argv(self):
        out = self.run_dir / "out"
        # the same command every time: an output folder to resume from (--resume), a checkpoint each epoch
        return ["train.py", *train_argv(self.name, self.run_dir / "root", out, self.models, "TRAIN.CHECKPOINT_FREQ",
                                        "1", epochs=self.epochs, print_freq=None, flags=("--resume", str(out)))]

    def watched(self):
        return [self.run_dir / "out" / self.model_folder, self.run_dir / "root" / "synthetic" / FEWSHOT]

    def damage(self, path):
        reference = self.reference_path(str(path))
        if path.name == LATEST_FILE:
            name = path.read_text()
            if not re.fullmatch(r"model\.pth\.tar-\d+\n", name):
                return f"half-written: {name!r}"
            return None if (path.parent / name.strip()).is_file() else f"names {name.strip()}, which is not there"
        if EPOCH_FILE.fullmatch(path.name):
            try:
                state = load_checkpoint(str(path))
            except ConfigError as e:
                return f"half-written: {e}"
            return None if same(state, load_checkpoint(str(reference))) else "not the reference's checkpoint"
        if path.parent.name == FEWSHOT:
            try:
                content = json.loads(path.read_text())
            except ValueError as e:
                return f"half-written: {e}"
            return None if content == json.loads(reference.read_text()) else "not the reference's sample"
        return f"unexpected file {path.name}"

    def latest_epoch(self) -> int:
        record = self.run_dir / "out" / self.model_folder / LATEST_FILE
        match = EPOCH_FILE.fullmatch(record.read_text().strip()) if record.is_file() else None
        return int(match[1]) if match else 0

    def writes_left(self):
        fewshot = self.run_dir / "root" / "synthetic" / FEWSHOT
        sampled = fewshot.is_dir() and any(fewshot.iterdir())
        return 2 * (self.epochs - self.latest_epoch()) + (0 if sampled else 1)  # checkpoint + pointer an epoch

    def final_differences(self, run, reference_stdout):
        problems = [] if results(run.stdout) == results(reference_stdout) else [
            f"evaluation {results(run.stdout)} instead of {results(reference_stdout)}"]
        for epoch in range(1, self.epochs + 1):
            path = self.run_dir / "out" / self.model_folder / epoch_file_name(epoch)
            if not path.is_file() or self.damage(path):
                problems.append(f"{path}: {'missing' if not path.is_file() else self.damage(path)}")
        return problems


class Build(Scenario):
    name = "build"

    def __init__(self, work: Path, pristine: Path, models):
        super().__init__(work)
        self.pristine, self.models = pristine, models

    @property
    def cache(self) -> Path:
        return self.run_dir / "root" / "synthetic" / "llamp_cache" / "llm"

    def argv(self):
        return ["-m", "llm_prompts", *build_argv(self.run_dir / "root", self.models, "--spacy-model", "none")]

    def watched(self):
        return [self.cache]

    def damage(self, path):
        reference = self.reference_path(str(path))
        if path.name == METADATA_FILE:
            try:
                meta = read_metadata(str(path.parent))
            except ConfigError as e:
                return f"half-written: {e}"
            for entry in meta["templates"] + ([meta["targets"]] if meta.get("targets") else []):
                listed = path.parent / entry["file"]
                if not listed.is_file() or sha256(listed) != entry["sha256"]:
                    return f"lists {entry['file']}, which is not the file it describes"
            return None
        if path.name == DESCRIPTIONS_FILE:  # a journal: a last line cut short is skipped by design
            try:
                records = read_descriptions(str(path))
            except ConfigError as e:
                return f"unreadable: {e}"
            wanted = read_descriptions(str(reference))
            return None if all(wanted.get(k) == r for k, r in records.items()) else "not the reference's answers"
        if path.suffix == ".safetensors":
            try:
                read_safetensors_header(str(path))
            except ConfigError as e:
                return f"half-written: {e}"
            return None if sha256(path) == sha256(reference) else "not the reference's file"
        return f"unexpected file {path.name}"

    def writes_left(self):
        try:
            meta = read_metadata(str(self.cache)) or {}
        except ConfigError:
            meta = {}
        listed = len(meta.get("templates") or [])
        # metadata and descriptions at the start; file + metadata per template; descriptions, targets, metadata
        return 2 + 2 * (NUM_TEMPLATES - listed) + (1 if meta.get("targets") else 2) + 1

    def final_differences(self, run, reference_stdout):
        mine = {Path(p).name: sha256(path) for p, path in files_under([self.cache]).items()
                if not TEMPORARY.match(Path(p).name)}
        theirs = {p.name: sha256(p) for p in self.reference_path(str(self.cache)).iterdir()}
        return [f"{name}: differs from the reference's" for name in sorted(set(mine) | set(theirs))
                if mine.get(name) != theirs.get(name)]


# ---------------------------------------------------------------- a campaign


@dataclass
class Kill:
    how: str  # the fault plan, or the timer
    inside: str | None  # the file being written (None: the kill fell between writes)
    on_disk: dict[str, str]  # what was on disk: path -> sha256
    problems: list[str]


@dataclass
class Campaign:
    scenario: str
    kills: list[Kill] = field(default_factory=list)
    leftovers: int = 0  # temporary files left beside their targets (never read)
    final: list[str] = field(default_factory=list)  # how the finished run differs from the reference

    @property
    def damaged(self) -> list[str]:
        return [p for k in self.kills for p in k.problems]


def check_disk(scenario: Scenario, whole_before: set[str]) -> tuple[dict[str, str], list[str]]:
    """What is on disk, and what is wrong with it: files damaged, or lost since an earlier kill
    (``whole_before``, updated here: the files found whole)."""
    on_disk, problems, whole = {}, [], set()
    for name, path in files_under(scenario.watched()).items():
        if TEMPORARY.match(path.name):
            continue
        on_disk[name] = sha256(path)
        wrong = scenario.damage(path)
        if wrong:
            problems.append(f"{name}: {wrong}")
        else:
            whole.add(name)
    problems += [f"{name}: lost (it was whole at an earlier kill)" for name in sorted(whole_before - set(on_disk))]
    whole_before.update(whole)
    return on_disk, problems


def run_campaign(scenario: Scenario, reference: Run, rng: random.Random, kills: int, timed: float = 0.0,
                 first_timed: bool = False, within: int | None = None, finish: bool = True) -> Campaign:
    """Up to ``kills`` kills (fewer if the command runs out of writes first), then the command to its end.

    A kill is at a random moment with probability ``timed`` (the first one if ``first_timed``), otherwise
    at a random stage of a random write among those the next run surely makes (among its first ``within``:
    short steps forward, so that a few kills cover every write in turn).
    """
    scenario.fresh()
    campaign = Campaign(scenario.name)
    whole_before: set[str] = set()
    while len(campaign.kills) < kills:
        left = scenario.writes_left()
        if first_timed and not campaign.kills or rng.random() < timed:
            at = rng.uniform(0.0, reference.seconds)
            run = run_command(scenario.argv(), scenario.work, kill_after=at)
            how = f"timer {at:.1f} s"
        elif left:
            how = f"{rng.choice(KILL_STAGES)}@{rng.randint(1, min(left, within or left))}"
            run = run_command(scenario.argv(), scenario.work, how)
        else:
            break
        if run.returncode == 0:  # the timer came after the end
            break
        assert run.returncode == -9, f"{scenario.name} ({how}) failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
        on_disk, problems = check_disk(scenario, whole_before)
        campaign.kills.append(Kill(how, run.inside, on_disk, problems))
    campaign.leftovers = sum(bool(TEMPORARY.match(Path(p).name)) for p in files_under(scenario.watched()))
    if finish:
        run = run_command(scenario.argv(), scenario.work)
        assert run.returncode == 0, f"{scenario.name}: the last run failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
        campaign.final = scenario.final_differences(run, reference.stdout)
    return campaign


def make_reference(scenario: Scenario) -> Run:
    """The uninterrupted run, in the campaign's folders (the same paths inside its files), then moved aside."""
    scenario.fresh()
    run = run_command(scenario.argv(), scenario.work)
    assert run.returncode == 0, f"{scenario.name}:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    shutil.rmtree(scenario.reference_dir, ignore_errors=True)
    os.replace(scenario.run_dir, scenario.reference_dir)
    return run


def summary(campaigns: list[Campaign]) -> str:
    rows = [("scenario", "campaigns", "kills", "inside a write", "identical at the end", "half-written or lost",
             "temporary files left")]
    for name in dict.fromkeys(c.scenario for c in campaigns):
        mine = [c for c in campaigns if c.scenario == name]
        kills = [k for c in mine for k in c.kills]
        rows.append((name, len(mine), len(kills), sum(k.inside is not None for k in kills),
                     f"{sum(not c.final for c in mine)} of {len(mine)}", sum(len(c.damaged) for c in mine),
                     sum(c.leftovers for c in mine)))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(row, widths)) for row in rows)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fault_campaign")


@pytest.fixture(scope="module")
def synthetic_root(work, synthetic_cache):
    """A data root with Synthetic only (no cache, no few-shot sample yet)."""
    root = work / "synthetic_root"
    shutil.copytree(synthetic_cache["root"], root, ignore=shutil.ignore_patterns(FEWSHOT, "llamp_cache"))
    return root


@pytest.fixture(scope="module")
def coop(work, synthetic_root, tiny_models):
    """CoOp, 2 shots of the base classes, a checkpoint each epoch, evaluated at the end; and its reference."""
    scenario = Training(work / "coop", "CoOp", "prompt_learner", synthetic_root, tiny_models, 3)
    return scenario, make_reference(scenario)


def test_killed_anywhere_ends_as_if_never_killed(coop, work, synthetic_cache, tiny_models, capsys):
    scenarios = [coop]
    if LONG:
        with_cache = work / "cache_root"
        shutil.copytree(synthetic_cache["root"], with_cache, ignore=shutil.ignore_patterns(FEWSHOT))
        llamp = Training(work / "llamp", "LLaMP", "llamp", with_cache, tiny_models, 3)
        build = Build(work / "build", coop[0].pristine, tiny_models)
        scenarios += [(llamp, make_reference(llamp)), (build, make_reference(build))]
    campaigns = []
    wanted = 20 if LONG else 5  # kills inside writes, per scenario
    for scenario, reference in scenarios:
        rng = random.Random(f"{SEED}-{scenario.name}")
        mine = []
        while sum(k.inside is not None for c in mine for k in c.kills) < wanted and len(mine) < 10:
            mine.append(run_campaign(scenario, reference, rng, kills=8 if LONG else wanted,
                                     timed=0.3 if LONG else 0.0, first_timed=LONG and not mine,
                                     within=None if LONG else 2))
        campaigns += mine
    with capsys.disabled():
        print(f"\nfault campaign ({'long' if LONG else 'CI'} mode, seed {SEED}):\n{summary(campaigns)}")
        if LONG:
            record = work / "kills.json"
            record.write_text(json.dumps([{"scenario": c.scenario, "how": k.how, "inside": k.inside,
                                           "on_disk": k.on_disk, "problems": k.problems}
                                          for c in campaigns for k in c.kills], indent=1))
            print(f"each kill point's files: {record}")
    kills = [k for c in campaigns for k in c.kills]
    assert sum(k.inside is not None for k in kills) >= (50 if LONG else 5)
    assert [p for c in campaigns for p in c.damaged] == []
    assert [(c.scenario, c.final) for c in campaigns if c.final] == []


def test_the_checks_see_the_damage_when_the_helper_is_bypassed(coop):
    """A kill halfway through the first checkpoint with the atomic helper off (the file written in place):
    the check that found nothing in the campaigns finds the half file."""
    scenario, reference = coop
    first_checkpoint = next(i for i, path in enumerate(reference.writes, 1) if path.endswith(epoch_file_name(1)))
    scenario.fresh()
    run = run_command(scenario.argv(), scenario.work, f"in-place,kill-halfway@{first_checkpoint}")
    assert run.returncode == -9 and run.inside.endswith(epoch_file_name(1))
    _, problems = check_disk(scenario, set())
    assert any(epoch_file_name(1) in p and "half-written" in p for p in problems), problems


# ---------------------------------------------------------------- a full or read-only folder


def mount_tmpfs(folder: Path, size: int) -> str | None:
    """Mount a tmpfs of ``size`` bytes on ``folder``: None once done, else why it could not be."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
    except OSError as e:
        return f"no mount command ({e})"
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"mount exited with {proc.returncode}")


def remount(folder: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True, capture_output=True)


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("condition", ["full", "read-only"])
def test_full_or_read_only_checkpoint_folder_stops_with_one_line(coop, condition):
    """The run resumes after epoch 2 and cannot write epoch 3's checkpoint: one line names it, the folder
    keeps epoch 2's whole checkpoint as the latest, and no temporary file is left."""
    scenario, _ = coop
    shutil.rmtree(scenario.run_dir, ignore_errors=True)
    shutil.copytree(scenario.reference_dir, scenario.run_dir)
    folder = scenario.run_dir / "out" / scenario.model_folder
    (folder / epoch_file_name(3)).unlink()
    (folder / LATEST_FILE).write_text(epoch_file_name(2) + "\n")
    kept = {p.name: p.read_bytes() for p in folder.iterdir()}
    why_not = mount_tmpfs(folder, sum(-(-len(data) // 4096) * 4096 for data in kept.values()) + 4096)  # a page free
    plan = ""
    try:
        if why_not is None:
            for name, data in kept.items():
                (folder / name).write_bytes(data)
            if condition == "read-only":
                remount(folder, "ro")
        else:
            plan = {"full": "enospc@1", "read-only": "erofs@1"}[condition]
            warnings.warn(f"cannot mount a tmpfs here ({why_not}): the {condition} folder is injected by the write "
                          f"helper instead ({PLAN_VARIABLE}={plan})")
        run = run_command(scenario.argv(), scenario.work, plan)
        assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
        lines = error_lines(run.stderr)
        reason = os.strerror(errno.ENOSPC if condition == "full" else errno.EROFS)
        assert lines == [f"error: cannot write {folder / epoch_file_name(3)}: {reason}; "
                         + ("free space on its disk" if condition == "full" else
                            f"make {folder} writable (or write elsewhere)") + ", then run the same command again"]
        assert sorted(p.name for p in folder.iterdir()) == sorted(kept)  # no temporary file
        assert (folder / LATEST_FILE).read_text() == epoch_file_name(2) + "\n"
        assert load_checkpoint(str(folder / epoch_file_name(2)))["epoch"] == 2
    finally:
        if why_not is None:
            unmount(folder)


def test_an_output_folder_that_takes_no_log_is_one_line(tmp_path, tiny_models, monkeypatch):
    """Dassl's log file, a run's first write (not through the helper): the same one line."""
    import train

    def read_only(output):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.path.join(output, "log.txt"))

    monkeypatch.setattr(train, "setup_logger", read_only)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=rf"^cannot write {re.escape(str(out / 'log.txt'))}: Read-only file system; "
                                          rf"make {re.escape(str(out))} writable"):
        train.main(train.parse_args(train_argv("CoOp", tmp_path, out, tiny_models)))


def test_full_or_read_only_cache_folder_stops_with_one_line(work, synthetic_root, tiny_models, capsys):
    """The build fills its folder (a 4 MB tmpfs: a third of the cache), then finds it read-only: each time one
    line naming the file, and the files written before stay whole and listed; with room again, it finishes."""
    from llm_prompts.__main__ import main

    root = work / "build_faults"
    shutil.copytree(synthetic_root, root)
    cache = root / "synthetic" / "llamp_cache" / "llm"
    argv = build_argv(root, tiny_models, "--spacy-model", "none")
    why_not = mount_tmpfs(cache, 4 << 20)
    if why_not is not None:
        warnings.warn(f"cannot mount a tmpfs here ({why_not}): the full and read-only cache folder are injected "
                      f"by the write helper instead ({PLAN_VARIABLE}=enospc@20, then erofs@1)")
    try:
        for condition, plan in (("full", "enospc@20"), ("read-only", "erofs@1")):
            if why_not is None and condition == "read-only":
                remount(cache, "ro")
            set_fault_plan(plan if why_not else "")
            capsys.readouterr()
            assert main(argv) == 2
            lines = error_lines(capsys.readouterr().err)
            reason = os.strerror(errno.ENOSPC if condition == "full" else errno.EROFS)
            assert len(lines) == 1 and re.fullmatch(rf"error: cannot write {re.escape(str(cache))}/\S+: {reason}; .*",
                                                    lines[0]), lines
            if condition == "read-only":
                assert f"{cache / METADATA_FILE}:" in lines[0]  # the build's first write
            assert not [p for p in cache.iterdir() if TEMPORARY.match(p.name)]
            meta = read_metadata(str(cache))
            assert not meta["complete"] and meta["templates"]  # some templates were done: they are kept
            for entry in meta["templates"]:
                assert sha256(cache / entry["file"]) == entry["sha256"]
        set_fault_plan("")
        if why_not is None:
            remount(cache, "rw,size=64m")
        assert main(argv) == 0
        KnowledgeCache.open(str(cache)).verify()
    finally:
        set_fault_plan("")
        if why_not is None:
            unmount(cache)


# ---------------------------------------------------------------- damaged files


def flip_member_byte(path: Path, member: str) -> None:
    """Change a byte in the middle of one member of the zip file torch.save writes (not in its padding,
    which nothing reads)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("/" + member))
    data = bytearray(path.read_bytes())
    name_length, extra_length = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")  # the local header's
    data[info.header_offset + 30 + name_length + extra_length + info.file_size // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_damaged_latest_checkpoint_resumes_from_the_one_before(coop):
    """A byte of the last checkpoint changed on disk: the run says so in one line, resumes from the
    checkpoint before it, and ends with the reference's weights and accuracy."""
    scenario, reference = coop
    shutil.rmtree(scenario.run_dir, ignore_errors=True)
    shutil.copytree(scenario.reference_dir, scenario.run_dir)
    folder = scenario.run_dir / "out" / scenario.model_folder
    flip_member_byte(folder / epoch_file_name(3), "data/0")  # a tensor's bytes: torch.load alone reads them
    run = run_command(scenario.argv(), scenario.work)
    assert run.returncode == 0, run.stderr[-3000:]
    notes = [line for line in run.stdout.splitlines() if "is damaged" in line]
    assert len(notes) == 1 and notes[0].startswith(f"Note: checkpoint {folder / epoch_file_name(3)} is damaged ("), notes
    assert f"resuming from {folder / epoch_file_name(2)}," in notes[0]
    assert "Resuming from epoch 2" in run.stdout
    assert scenario.final_differences(run, reference.stdout) == []


def test_damaged_cache_files_are_named_and_the_build_rewrites_them(work, synthetic_cache, tiny_models, capsys):
    """Cut short, a byte changed, a wrong dtype or shape in the header: one line names each file (a changed
    byte: ``inspect --verify``); the build run again rewrites those files and only those."""
    from llm_prompts.__main__ import main

    root = work / "damaged_cache"
    shutil.copytree(synthetic_cache["root"], root, ignore=shutil.ignore_patterns(FEWSHOT))
    cache = root / "synthetic" / "llamp_cache" / "llm"
    intact = {p.name: p.read_bytes() for p in cache.iterdir()}

    def cut(data):
        return data[:len(data) // 2]

    def flip(data):
        return data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:]  # in the tensor data: the header reads fine

    def other_dtype(data):
        return data.replace(b'"dtype":"F32"', b'"dtype":"F16"', 1)

    def other_shape(data):
        return re.sub(rb'"shape":\[36,', b'"shape":[35,', data, count=1)

    damages = {0: (cut, r"is truncated or corrupt"), 1: (flip, r"is corrupt \(sha256 differs"),
               2: (other_dtype, r"is F16 "), 3: (other_shape, r"is \w+ \[35, ")}
    for index, (damage, message) in damages.items():
        path = cache / kv_file_name(index)
        damaged = damage(intact[path.name])
        assert damaged != intact[path.name]
        path.write_bytes(damaged)
        with pytest.raises(ConfigError) as raised:
            KnowledgeCache.open(str(cache)).verify()
        assert str(path) in str(raised.value) and re.search(message, str(raised.value)), raised.value
        assert "\n" not in str(raised.value)
        path.write_bytes(intact[path.name])
    for index, (damage, _) in damages.items():
        (cache / kv_file_name(index)).write_bytes(damage(intact[kv_file_name(index)]))
    argv = ["build", "--root", str(root), "--dataset-config-file", os.path.join(REPO, "configs", "datasets",
            "synthetic.yaml"), "--llm", tiny_models["llm"], "--clip", tiny_models["clip"], "--spacy-model",
            "none", "--quiet"]
    capsys.readouterr()
    assert main(argv) == 0
    assert "keys/values: 4 templates computed, 7 up to date" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in cache.iterdir() if p.name != METADATA_FILE} == \
        {name: data for name, data in intact.items() if name != METADATA_FILE}


@pytest.mark.parametrize("damage", ["cut short", "byte changed", "pickled header changed", "pointer names nothing"])
def test_damaged_checkpoint_is_named_and_resume_falls_back(tmp_path, capsys, damage):
    """Each damage of the latest checkpoint: the resume says which file and goes on from the one before;
    with no older checkpoint that reads, one line says how to start again."""
    from test_trainer_checkpoint import Model, bare_trainer

    torch.manual_seed(0)
    source = bare_trainer(Model())
    for epoch in range(3):
        source._models["prompt_learner"].prompt.data += 1
        source.save_model(epoch, str(tmp_path))
    folder = tmp_path / "prompt_learner"
    latest = folder / epoch_file_name(3)
    if damage == "cut short":
        latest.write_bytes(latest.read_bytes()[:latest.stat().st_size // 2])
    elif damage == "byte changed":
        flip_member_byte(latest, "data/0")  # a tensor's bytes: torch.load alone reads them
    elif damage == "pickled header changed":
        flip_member_byte(latest, "data.pkl")  # the pickle naming each tensor's dtype and shape
    else:
        (folder / LATEST_FILE).write_text("model.pth.tar-9\n")
    # the file named as damaged, and the epoch resumed from (a pointer to nothing: the newest that reads)
    named, back = (folder / "model.pth.tar-9", 3) if damage == "pointer names nothing" else (latest, 2)

    capsys.readouterr()
    resumed = bare_trainer(Model())
    assert resumed.resume_model_if_exist(str(tmp_path)) == back
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Note:")]
    assert len(notes) == 1 and str(named) in notes[0], notes
    assert f"resuming from {folder / epoch_file_name(back)}," in notes[0]
    restored = load_checkpoint(str(folder / epoch_file_name(back)))["state_dict"]["prompt"]
    assert torch.equal(resumed._models["prompt_learner"].prompt.detach(), restored)

    for epoch in range(1, back + 1):
        (folder / epoch_file_name(epoch)).write_bytes(b"")
    with pytest.raises(ConfigError) as raised:
        bare_trainer(Model()).resume_model_if_exist(str(tmp_path))
    assert str(named) in str(raised.value) and "\n" not in str(raised.value)
    assert str(raised.value).endswith(f"no older checkpoint reads: delete {folder / LATEST_FILE} to train from scratch")
