"""comparison.results: numbers from a hand-written output tree, the files written, and the
protocol scripts' layout read back end to end (zero-shot CLIP through scripts/zsclip/)."""
import csv
import os
import statistics
import subprocess

import pytest

from comparison.layout import find_runs
from comparison.logs import main as logs_main
from comparison.logs import read_run
from comparison.results import main as results_main
from comparison.summary import summarize
from tests.train_cli import REPO, accuracy

# base / new accuracies per (trainer, dataset), seeds 1..3
BASE2NEW = {
    ("CoOp", "oxford_pets"): ([90.1, 91.3, 89.8], [60.2, 58.7, 61.0]),
    ("CoOp", "eurosat"): ([80.0, 82.0], [50.5, 49.5]),  # seed 3 never run
    ("LLaMP", "oxford_pets"): ([95.0, 94.6, 95.4], [97.1, 96.9, 97.3]),
    ("LLaMP", "eurosat"): ([92.0, 93.0, 94.0], [80.0, 82.0]),  # seed 3's new run has no result
}
CONFIGS = {"CoOp": "vit_b16_base2new", "LLaMP": "base2new"}


def write_log(folder, test=None, val=(), name="log.txt"):
    """A Dassl-like log: validation blocks (not results), then the test block."""
    os.makedirs(folder, exist_ok=True)
    lines = ["Setting fixed seed: 1", "epoch [1/2] batch [1/4] loss 1.2 (1.2)"]
    for acc in val:
        lines += ["Evaluate on the *val* set", "=> result", "* total: 60", f"* accuracy: {acc}%", "* error: 1%"]
    if test is not None:
        lines += ["Evaluate on the *test* set", "=> result", "* total: 120", "* correct: 100",
                  f"* accuracy: {test}%", "* error: 10.0%", "* macro_f1: 80.0%"]
    with open(os.path.join(folder, name), "w") as f:
        f.write("\n".join(lines) + "\n")


def run_dir(root, *parts):
    return os.path.join(root, *map(str, parts))


@pytest.fixture
def output_tree(tmp_path):
    root = str(tmp_path / "output")
    for (trainer, dataset), (bases, news) in BASE2NEW.items():
        for seed, base in enumerate(bases, 1):
            common = (dataset, "shots_16", trainer, CONFIGS[trainer], f"seed{seed}")
            write_log(run_dir(root, "base2new", "train_base", *common), base, val=(99.9,))
            new_dir = run_dir(root, "base2new", "test_new", *common)
            write_log(new_dir, news[seed - 1] if seed <= len(news) else None)
    for trainer, offset in (("CoOp", 0.0), ("LLaMP", 5.0)):
        for shots in (4, 16):
            for seed in (1, 2):
                write_log(run_dir(root, "few_shot", "dtd", f"shots_{shots}", trainer, "fs", f"seed{seed}"),
                          40.0 + shots + seed + offset)
        write_log(run_dir(root, "xd", "train", "imagenet", "shots_16", trainer, "fs", "seed1"), 70.0 + offset)
        for target, acc in (("caltech101", 90.0), ("dtd", 44.0), ("imagenetv2", 60.0), ("imagenet_a", 50.0)):
            write_log(run_dir(root, "xd", "test", target, "shots_16", trainer, "fs", "seed1"), acc + offset)
    return root


def tables_of(root):
    runs, unrecognised = find_runs(root)
    assert not unrecognised
    summary = summarize(runs)
    return {t.name: t for t in summary.tables}, summary.incomplete


def row_of(table, trainer, shots=None):
    rows = [r for r in table.rows if r.trainer == trainer and (shots is None or r.shots == shots)]
    assert len(rows) == 1
    return rows[0]


def test_log_reading_takes_the_last_test_accuracy(tmp_path):
    write_log(str(tmp_path / "a"), 71.5, val=(88.0, 90.0))
    assert read_run(str(tmp_path / "a")).accuracy == 71.5
    write_log(str(tmp_path / "b"), None, val=(88.0,))  # validated, then killed before the test
    assert read_run(str(tmp_path / "b")).accuracy is None
    assert read_run(str(tmp_path / "missing")).log is None
    # started again in the same folder: Dassl keeps log.txt and writes log.txt-<date>-<time>
    write_log(str(tmp_path / "c"), None)
    write_log(str(tmp_path / "c"), 64.2, name="log.txt-2024-05-01-10-00-00")
    result = read_run(str(tmp_path / "c"))
    assert result.accuracy == 64.2 and result.log.endswith("log.txt-2024-05-01-10-00-00")
    assert logs_main([str(tmp_path / "a")]) == 0 and logs_main([str(tmp_path / "b")]) == 1


def test_base2new_means_std_hm_and_average(output_tree):
    tables, _ = tables_of(output_tree)
    table = tables["base2new"]
    assert table.columns == ["oxford_pets", "eurosat", "average"]  # the papers' dataset order
    assert [r.trainer for r in table.rows] == ["CoOp", "LLaMP"]
    means = {}
    for (trainer, dataset), (bases, news) in BASE2NEW.items():
        row = row_of(table, trainer)
        base, new = row.get("base", dataset), row.get("new", dataset)
        assert base.mean == pytest.approx(statistics.fmean(bases))
        assert base.std == pytest.approx(statistics.pstdev(bases))  # population std, as parse_test_res.py
        assert base.seeds == tuple(range(1, len(bases) + 1))
        assert new.mean == pytest.approx(statistics.fmean(news))
        hm = 2 * base.mean * new.mean / (base.mean + new.mean)  # HM of the seed-averaged base and new
        assert row.get("HM", dataset).mean == pytest.approx(hm)
        means[(trainer, dataset)] = (base.mean, new.mean)
    for trainer in ("CoOp", "LLaMP"):
        row = row_of(table, trainer)
        avg_base = statistics.fmean(means[(trainer, d)][0] for d in ("oxford_pets", "eurosat"))
        avg_new = statistics.fmean(means[(trainer, d)][1] for d in ("oxford_pets", "eurosat"))
        assert row.get("base", "average").mean == pytest.approx(avg_base)
        assert row.get("new", "average").mean == pytest.approx(avg_new)
        assert row.get("HM", "average").mean == pytest.approx(2 * avg_base * avg_new / (avg_base + avg_new))
    # fewer seeds than the other method: flagged
    assert row_of(table, "CoOp").get("base", "eurosat").short
    assert row_of(table, "LLaMP").get("new", "eurosat").short
    assert not row_of(table, "LLaMP").get("base", "eurosat").short


def test_incomplete_runs_are_listed(output_tree):
    _, incomplete = tables_of(output_tree)
    text = "\n".join(i.what for i in incomplete)
    no_result = run_dir(output_tree, "base2new", "test_new", "eurosat", "shots_16", "LLaMP", "base2new", "seed3")
    assert f"{no_result}/log.txt: no accuracy line" in text
    assert "LLaMP [base2new, 16 shots] on eurosat, seed 3: base run without its new-class result" in text
    assert "CoOp [vit_b16_base2new, 16 shots] on eurosat: seed(s) 3 missing" in text
    assert len(incomplete) == 3, text


def test_few_shot_and_cross_dataset_tables(output_tree):
    tables, _ = tables_of(output_tree)
    few = tables["few_shot"]
    assert [(r.trainer, r.shots) for r in few.rows] == [("CoOp", 4), ("CoOp", 16), ("LLaMP", 4), ("LLaMP", 16)]
    expected = statistics.fmean([40.0 + 16 + 1, 40.0 + 16 + 2]) + 5.0
    assert row_of(few, "LLaMP", 16).get("accuracy", "dtd").mean == pytest.approx(expected)
    assert row_of(few, "CoOp", 4).label == "CoOp, 4 shots"
    cross, dg = tables["xd_cross_dataset"], tables["xd_domain_generalization"]
    assert cross.columns == ["imagenet", "caltech101", "dtd", "average"]
    assert dg.columns == ["imagenet", "imagenetv2", "imagenet_a", "average"]
    llamp = row_of(cross, "LLaMP")
    assert llamp.get("accuracy", "imagenet").mean == 75.0
    assert llamp.get("accuracy", "average").mean == pytest.approx((95.0 + 49.0) / 2)  # targets only
    assert row_of(dg, "CoOp").get("accuracy", "average").mean == pytest.approx(55.0)


def test_files_written(output_tree, tmp_path, capsys):
    out = tmp_path / "results"
    assert results_main([output_tree, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Base-to-novel generalization" in printed and "Incomplete runs (3)" in printed

    with open(out / "base2new.csv") as f:
        rows = list(csv.DictReader(f))
    coop_base = next(r for r in rows if r["trainer"] == "CoOp" and r["metric"] == "base")
    bases = BASE2NEW[("CoOp", "oxford_pets")][0]
    assert coop_base["oxford_pets"] == f"{statistics.fmean(bases):.2f}"
    assert coop_base["oxford_pets std"] == f"{statistics.pstdev(bases):.2f}"
    assert coop_base["config"] == "vit_b16_base2new" and coop_base["shots"] == "16"
    llamp_hm = next(r for r in rows if r["trainer"] == "LLaMP" and r["metric"] == "HM")
    assert llamp_hm["oxford_pets std"] == ""  # HM has no std

    markdown = (out / "base2new.md").read_text()
    mean, std = statistics.fmean(bases), statistics.pstdev(bases)
    assert "| method | metric | oxford_pets | eurosat | average |" in markdown
    assert f"| CoOp | base | {mean:.2f} ± {std:.2f} |" in markdown
    assert "base run without its new-class result" in markdown  # incomplete runs under the table

    for name in ("base2new", "few_shot", "xd_cross_dataset", "xd_domain_generalization"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{name}.csv").is_file() and (out / f"{name}.md").is_file()
    assert "no accuracy line" in (out / "incomplete.txt").read_text()
    with open(out / "runs.csv") as f:
        assert sum(1 for _ in csv.DictReader(f)) == 22 + 8 + 10  # every seed folder: base2new, few-shot, xd


def test_filters_and_expected_methods(output_tree, tmp_path, capsys):
    out = tmp_path / "r"
    assert results_main([output_tree, "--out", str(out), "--protocol", "base2new", "--datasets", "oxford_pets",
                         "--methods", "LLaMP", "MaPLe", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "CoOp" not in printed and "MaPLe: no runs at all" in printed
    assert not (out / "base2new.png").exists() and not (out / "few_shot.csv").exists()
    assert results_main([str(tmp_path / "r"), "--out", str(tmp_path / "r2")]) == 1  # no runs there
    # a config filter keeps only that config's rows (the few-shot runs are under "fs")
    assert results_main([output_tree, "--out", str(tmp_path / "r3"), "--configs", "fs", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "few_shot" in printed and "base2new" not in printed


def script(path, *args, env=None):
    full_env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    return subprocess.run(["bash", os.path.join(REPO, "scripts", path), *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=600)


def test_scripts_write_what_the_parser_reads(tiny_models, tmp_path):
    """Zero-shot CLIP (evaluation only, fast) through the base-to-novel scripts, then the parser."""
    env = dict(DATA=str(tmp_path / "data"), OUTPUT=str(tmp_path / "output"),
               EXTRA_OPTS=f"MODEL.BACKBONE.PATH {tiny_models['clip']}")
    for stage in ("base2new_train", "base2new_test"):
        proc = script(f"zsclip/{stage}.sh", "synthetic", "1", "demo", env=env)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = os.path.join("synthetic", "shots_16", "ZeroshotCLIP", "demo", "seed1")
    logged = {}
    for metric, stage in (("base", "train_base"), ("new", "test_new")):
        with open(os.path.join(env["OUTPUT"], "base2new", stage, run, "log.txt")) as f:
            logged[metric] = accuracy(f.read())

    tables, incomplete = tables_of(env["OUTPUT"])
    row = row_of(tables["base2new"], "ZeroshotCLIP")
    assert row.config == "demo" and row.shots == 16 and not incomplete
    assert row.get("base", "synthetic").mean == logged["base"]
    assert row.get("new", "synthetic").mean == logged["new"]

    again = script("zsclip/base2new_train.sh", "synthetic", "1", "demo", env=env)  # finished: skipped
    assert again.returncode == 0 and "skipping" in again.stdout


def test_script_usage_errors(tmp_path):
    proc = script("coop/few_shot.sh", "oxford_pets", "1")
    assert proc.returncode == 2 and "usage:" in proc.stderr and "DATASET SEED SHOTS [CFG]" in proc.stderr
    proc = script("coop/base2new_test.sh", "oxford_pets", "1", env=dict(DATA=str(tmp_path), OUTPUT=str(tmp_path)))
    assert proc.returncode == 2 and "no finished training run" in proc.stderr
    proc = script("llamp/xd_test.sh", "imagenet", "1", env=dict(DATA=str(tmp_path), OUTPUT=str(tmp_path)))
    assert proc.returncode == 2 and "another dataset" in proc.stderr
    proc = script("compare.sh", "no_such_dataset", env=dict(TINY="1"))
    assert proc.returncode == 2 and "configs/datasets/no_such_dataset.yaml does not exist" in proc.stderr
    proc = script("compare.sh", "synthetic", env=dict(TINY="1", METHODS="CoOp Foo"))
    assert proc.returncode == 2 and "unknown method 'Foo'" in proc.stderr
