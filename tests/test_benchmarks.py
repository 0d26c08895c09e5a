"""The benchmark datasets read their on-disk layouts (vl_datasets/benchmarks.py, fgvc_aircraft.py,
imagenet.py): the split-file datasets, FGVCAircraft and the ImageNet family, and name what is missing.
Every dataset here is a handful of tiny PNGs written to tmp_path in the layout the real benchmark uses.
"""
import json
import random
from pathlib import Path

import pytest
from dataset_files import build, png, per_label, records, write_pets, write_split

from llamp.errors import MissingFileError


# ---------------------------------------------------------------- split-file datasets

SPLIT_LAYOUTS = [
    ("Caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    ("OxfordPets", "oxford_pets", "images", "split_zhou_OxfordPets.json"),
    ("StanfordCars", "stanford_cars", "", "split_zhou_StanfordCars.json"),
    ("OxfordFlowers", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    ("Food101", "food-101", "images", "split_zhou_Food101.json"),
    ("SUN397", "sun397", "SUN397", "split_zhou_SUN397.json"),
    ("DescribableTextures", "dtd", "images", "split_zhou_DescribableTextures.json"),
    ("EuroSAT", "eurosat", "2750", "split_zhou_EuroSAT.json"),
    ("UCF101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
]


@pytest.mark.parametrize("name, folder, image_folder, split_file", SPLIT_LAYOUTS)
def test_split_file_datasets_read_the_coop_layout(tmp_path, name, folder, image_folder, split_file):
    ds_dir = tmp_path / folder
    image_dir = ds_dir / image_folder if image_folder else ds_dir
    classes = {0: "Class With Spaces", 1: "b_class"}
    content = write_split(image_dir, ds_dir / split_file, {"train": 2, "val": 1, "test": 1}, classes)

    ds = build(tmp_path, name)
    for split, items in (("train", ds.train_x), ("val", ds.val), ("test", ds.test)):
        assert records(items) == [(str(image_dir / rel), label, cname) for rel, label, cname in content[split]]
    assert ds.classnames == ["Class With Spaces", "b_class"]


# ---------------------------------------------------------------- FGVCAircraft, ImageNet family


def test_fgvc_aircraft_reads_variants_and_image_lists(tmp_path):
    ds_dir = tmp_path / "fgvc_aircraft"
    ds_dir.mkdir()
    (ds_dir / "variants.txt").write_text("Cessna 172\n707-320\nA300B4\n")
    lists = {
        "train": ["0001 A300B4", "0002 Cessna 172", "0003 707-320"],
        "val": ["0004 Cessna 172"],
        "test": ["0005 707-320", "0006 A300B4"],
    }
    for split, lines in lists.items():
        (ds_dir / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            png(ds_dir / "images" / f"{line.split()[0]}.jpg")

    ds = build(tmp_path, "FGVCAircraft")
    img = ds_dir / "images"
    assert records(ds.train_x) == [
        (str(img / "0001.jpg"), 2, "A300B4"),
        (str(img / "0002.jpg"), 0, "Cessna 172"),
        (str(img / "0003.jpg"), 1, "707-320"),
    ]
    assert records(ds.val) == [(str(img / "0004.jpg"), 0, "Cessna 172")]
    assert [d.label for d in ds.test] == [1, 2]
    assert ds.classnames == ["Cessna 172", "707-320", "A300B4"]


def write_imagenet(root):
    ds_dir = Path(root) / "imagenet"
    # classnames.txt is not in wnid order: labels must come from the sorted folders.
    (ds_dir).mkdir(parents=True)
    (ds_dir / "classnames.txt").write_text("n003 great white shark\nn001 tench\nn002 goldfish\n")
    for wnid in ("n002", "n003", "n001"):
        for i in range(4):
            png(ds_dir / "images" / "train" / wnid / f"{wnid}_{i}.JPEG")
        png(ds_dir / "images" / "val" / wnid / f"val_{wnid}.JPEG")
    png(ds_dir / "images" / "train" / "n001" / ".hidden.JPEG")
    return ds_dir


def test_imagenet_reads_sorted_folders_and_caches_json(tmp_path):
    ds_dir = write_imagenet(tmp_path)
    ds = build(tmp_path, "ImageNet")
    assert ds.classnames == ["tench", "goldfish", "great white shark"]
    train = ds_dir / "images" / "train"
    assert records(ds.train_x)[:5] == [(str(train / "n001" / f"n001_{i}.JPEG"), 0, "tench") for i in range(4)] + [
        (str(train / "n002" / "n002_0.JPEG"), 1, "goldfish")
    ]
    assert len(ds.train_x) == 12  # the hidden file is skipped
    assert records(ds.val) == records(ds.test)
    assert [(d.label, d.classname) for d in ds.test] == [(0, "tench"), (1, "goldfish"), (2, "great white shark")]

    cache = ds_dir / "preprocessed.json"
    stored = json.loads(cache.read_text())
    assert stored["train"][0] == ["images/train/n001/n001_0.JPEG", 0, "tench"]
    # The second build reads the cache, not the folders.
    stored["test"][0][2] = "edited tench"
    cache.write_text(json.dumps(stored))
    assert build(tmp_path, "ImageNet").test[0].classname == "edited tench"


def test_imagenet_few_shot_samples_train_only(tmp_path):
    ds_dir = write_imagenet(tmp_path)
    random.seed(5)
    ds = build(tmp_path, "ImageNet", shots=2, seed=5)
    assert per_label(ds.train_x) == {0: 2, 1: 2, 2: 2}
    assert per_label(ds.test) == {0: 1, 1: 1, 2: 1} and records(ds.val) == records(ds.test)
    stored = json.loads((ds_dir / "split_fewshot" / "shot_2-seed_5.json").read_text())
    assert set(stored) == {"train"}


def test_imagenetv2_labels_follow_classnames_order(tmp_path):
    ds_dir = tmp_path / "imagenetv2"
    ds_dir.mkdir()
    (ds_dir / "classnames.txt").write_text("n009 zebra\nn001 tench\nn005 goldfish\n")
    image_dir = ds_dir / "imagenetv2-matched-frequency-format-val"
    for label in range(3):
        png(image_dir / str(label) / "a.jpeg")
    ds = build(tmp_path, "ImageNetV2", shots=4)  # test-only: NUM_SHOTS is ignored
    names = ["zebra", "tench", "goldfish"]  # line order, not wnid order
    assert records(ds.test) == [(str(image_dir / str(i) / "a.jpeg"), i, n) for i, n in enumerate(names)]
    assert records(ds.train_x) == records(ds.val) == records(ds.test)


@pytest.mark.parametrize(
    "name, folder, image_folder",
    [("ImageNetSketch", "imagenet-sketch", "images"), ("ImageNetA", "imagenet-adversarial", "imagenet-a"),
     ("ImageNetR", "imagenet-rendition", "imagenet-r")],
)
def test_wnid_folder_test_sets(tmp_path, name, folder, image_folder):
    ds_dir = tmp_path / folder
    ds_dir.mkdir()
    (ds_dir / "classnames.txt").write_text("n001 tench\nn002 goldfish\nn003 shark\nn004 eel\nn005 ray\n")
    for wnid in ("n004", "n002", "n005"):  # a subset of the classes, as in ImageNet-A/R
        png(ds_dir / image_folder / wnid / "x.png")
    (ds_dir / image_folder / "README.txt").write_text("not a class")

    ds = build(tmp_path, name, shots=1)
    assert [(d.label, d.classname) for d in ds.test] == [(0, "goldfish"), (1, "eel"), (2, "ray")]
    base = build(tmp_path, name, subsample="base")
    assert base.classnames == ["goldfish", "eel"]
    assert records(base.train_x) == records(base.val) == records(base.test)


# ---------------------------------------------------------------- missing files


def test_missing_dataset_folder_names_the_path(tmp_path):
    with pytest.raises(MissingFileError) as err:
        build(tmp_path, "OxfordPets")
    assert str(tmp_path / "oxford_pets") in str(err.value)
    assert "DATASETS.md" in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_missing_split_file_names_it(tmp_path):
    (tmp_path / "oxford_pets" / "images").mkdir(parents=True)
    with pytest.raises(MissingFileError) as err:
        build(tmp_path, "OxfordPets")
    assert str(tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json") in str(err.value)
    assert "download split_zhou_OxfordPets.json" in str(err.value)


def test_missing_image_names_the_image_and_the_split_file(tmp_path):
    ds_dir = write_pets(tmp_path)
    victim = ds_dir / "images" / "abyssinian" / "test_1.png"
    victim.unlink()
    with pytest.raises(MissingFileError, match="split_zhou_OxfordPets.json") as err:
        build(tmp_path, "OxfordPets")
    assert str(victim) in str(err.value)


def test_missing_imagenet_classnames(tmp_path):
    (tmp_path / "imagenet" / "images" / "train").mkdir(parents=True)
    with pytest.raises(MissingFileError, match="classnames.txt"):
        build(tmp_path, "ImageNet")


# ---------------------------------------------------------------- the real-width benchmark at tiny size
# benchmarks/real_width.py measures fp32 against bf16; here its benches run the tiny models (demo configs) in
# this process, and its report is checked on runs whose figures are known.


def tiny_bench_job(tiny_models, folder, prec, method="LLaMP", classes=3, templates=2):
    import torch

    from benchmarks.real_width_assets import class_names, write_cache
    from llamp.clip.loading import load_clip

    job = {"method": method, "prec": prec, "classnames": class_names(classes), "config": f"{method}/demo.yaml",
           **tiny_models}
    if method == "LLaMP":
        job["cache"] = str(folder / f"cache-{prec}")
        write_cache(job["cache"], job["classnames"], tiny_models["llm"], load_clip("ViT-B/16", tiny_models["clip"]),
                    num_templates=templates, dtype=torch.bfloat16 if prec == "bf16" else torch.float32)
    return job


@pytest.mark.parametrize("method", ["LLaMP", "MaPLe"])
@pytest.mark.parametrize("prec", ["fp32", "bf16"])
def test_real_width_benches_place_each_tensor_as_the_precision_table(tiny_models, tmp_path, method, prec):
    import torch

    from benchmarks.real_width_benches import BENCHES

    bench = BENCHES[method](tiny_bench_job(tiny_models, tmp_path, prec, method))
    frozen = {p.dtype for p in bench.model.parameters() if not p.requires_grad}
    assert frozen == {torch.bfloat16 if prec == "bf16" else torch.float32}
    assert {p.dtype for p in bench.model.parameters() if p.requires_grad} == {torch.float32}
    images, labels = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0)), torch.arange(4) % 3
    parts = bench.step(images, labels)
    assert {"forward", "backward", "optimiser"} <= set(parts) and all(v >= 0 for v in parts.values())
    states = [v for s in bench.optim.state_dict()["state"].values() for v in s.values() if torch.is_tensor(v)]
    assert states and {t.dtype for t in states if t.numel() > 1} <= {torch.float32}
    bench.eval()
    with torch.no_grad():
        bench.text_features()
        probabilities = bench.eval_batch(images)
    assert probabilities.shape == (4, 3) and torch.isfinite(probabilities).all()
    memory = bench.memory_bytes()
    assert memory["trainable"] == sum(p.numel() * 4 for p in bench.model.parameters() if p.requires_grad)
    assert set(memory["frozen"]) == {"bfloat16" if prec == "bf16" else "float32"}
    if method == "LLaMP":
        assert bench.num_templates == 2 and bench.text.shape[0] == 2
        assert bench.stager.dtype == (torch.bfloat16 if prec == "bf16" else torch.float32)
        assert memory["kv_dtype"] == ("bfloat16" if prec == "bf16" else "float32")
        kv = bench.stager.get(0)
        assert kv.keys[0].dtype == bench.stager.dtype
        assert memory["kv_per_class_template"] == sum(t.numel() * t.element_size()
                                                      for t in (*kv.keys, *kv.values, kv.mask)) / 3
        assert memory["optimizer_state"] >= 2 * memory["trainable"]  # AdamW: two moments per trained tensor
        assert memory["text_features_per_class"] == 2 * bench.text.shape[-1] * 4


def test_real_width_class_names_and_job_groups():
    from benchmarks.real_width import job_groups
    from benchmarks.real_width_assets import CLASSNAMES, class_names

    names = class_names(500)
    assert len(set(names)) == 500 and names[:len(CLASSNAMES)] == CLASSNAMES
    assert all(len(n.split()) == 2 for n in names[len(CLASSNAMES):])
    jobs = [{"method": m, "prec": p, "classnames": class_names(n)}
            for n in (24, 500) for p in ("fp32", "bf16") for m in ("LLaMP", "MaPLe")]
    groups = job_groups(jobs, budget_gib=14)
    assert [len(g) for g in groups] == [4, 1, 1, 1, 1]  # 24 classes together; 500: one job at a time
    assert all(len({len(j["classnames"]) for j in g}) == 1 for g in groups)


def fake_run(method, prec, classes, step, text, templates, anon, model_bytes=None):
    """A run as process_runner returns it, with the figures given (memory in bytes)."""
    phase = {"anon": anon, "file": 0, "rss": anon + 100, "vm_hwm": anon + 100, "start_anon": anon // 2}
    return {"method": method, "prec": prec, "classes": classes, "templates": templates, "step_s": {"total": step},
            "text_features_s": text, "memory": {"build": dict(phase), "train": dict(phase), "eval": dict(phase)},
            "model_bytes": model_bytes}


def test_real_width_precision_table_scales_one_template_runs():
    from benchmarks.real_width_report import precision_rows

    runs = [fake_run("LLaMP", "fp32", 24, 4.0, 11.0, 11, 2 ** 30), fake_run("LLaMP", "bf16", 24, 2.0, 5.5, 11, 2 ** 30),
            fake_run("LLaMP", "fp32", 500, 40.0, 2.0, 1, 8 * 2 ** 30),
            fake_run("LLaMP", "bf16", 500, 10.0, 1.0, 1, 4 * 2 ** 30)]
    rows = {(r["method"], r["classes"]): r["measures"] for r in precision_rows(runs)}
    assert rows["LLaMP", 24]["training step (s)"] == {"fp32": 4.0, "bf16": 2.0, "ratio": 0.5}
    assert rows["LLaMP", 24]["text features, 1 template (s)"]["fp32"] == pytest.approx(1.0)
    evaluation = rows["LLaMP", 500]["text features, evaluation (s)"]
    assert evaluation["scaled"] and evaluation["fp32"] == pytest.approx(22.0) and evaluation["ratio"] == 0.5
    assert "scaled" not in rows["LLaMP", 24]["text features, evaluation (s)"]
    assert rows["LLaMP", 500]["peak anonymous (GiB)"]["ratio"] == 0.5


def test_real_width_gpu_memory_estimate_follows_the_measured_lines():
    from benchmarks.real_width_gpu_memory import CUDA_CONTEXT_GIB, NUM_TEMPLATES, gpu_memory_inputs
    from benchmarks.real_width_report import GIB

    mib = 2 ** 20
    runs = []
    for n in (24, 100, 500):
        b = {"trainable": 200 * mib, "frozen": {"bfloat16": 600 * mib}, "buffers": 2048 * n,
             "optimizer_state": 400 * mib, "kv_per_class_template": 1.5 * mib, "kv_dtype": "bfloat16",
             "text_features_per_class": 2048.0}
        r = fake_run("LLaMP", "bf16", n, 1.0, 1.0, 1, 0, b)
        r["memory"]["train"].update(start_anon=2 * GIB, anon=2 * GIB + GIB + 20 * mib * n)
        r["memory"]["eval"].update(start_anon=3 * GIB, anon=3 * GIB + 5 * mib * n)
        runs.append(r)
    g = gpu_memory_inputs(runs + [fake_run("LLaMP", "fp32", 24, 1.0, 1.0, 11, GIB)])
    assert g["fits"]["train_growth"]["per_class"] == pytest.approx(20 * mib)
    assert g["fits"]["train_growth"]["intercept"] == pytest.approx(GIB)
    weights = 800 * mib + 2048 * 1000
    step = (weights + GIB + 20 * mib * 1000) / GIB + CUDA_CONTEXT_GIB
    assert g["estimate"]["classes"]["1000"]["step_gib"] == pytest.approx(step)
    evaluation = (weights + 400 * mib + 5 * mib * 1000 + 1000 * 2048 * NUM_TEMPLATES) / GIB + CUDA_CONTEXT_GIB
    assert g["estimate"]["classes"]["1000"]["eval_gib"] == pytest.approx(evaluation)
    largest = g["estimate"]["largest_class_count"]["24"]
    assert (800 * mib + GIB + (20 * mib + 2048) * largest) / GIB + CUDA_CONTEXT_GIB <= 24


def test_real_width_process_runner_measures_both_precisions(tiny_models, tmp_path):
    """One group, LLaMP in fp32 and bf16 at tiny size, each in its spawned process as the benchmark runs it."""
    from benchmarks.process_runner import measure_group
    from benchmarks.real_width_report import precision_rows

    jobs = [tiny_bench_job(tiny_models, tmp_path, prec) for prec in ("fp32", "bf16")]
    runs = measure_group(jobs, steps=1, parts=True, log=lambda message: None, warmup=1)
    assert [(r["method"], r["prec"], r["classes"], r["templates"]) for r in runs] == [
        ("LLaMP", "fp32", 3, 2), ("LLaMP", "bf16", 3, 2)]
    for r in runs:
        assert r["step_s"]["total"] > 0 and r["text_features_s"] > 0 and "llm_decoder" in r["parts_s"]
        assert r["memory"]["train"]["anon"] >= r["memory"]["train"]["start_anon"] > 0
        assert r["model_bytes"]["kv_dtype"] == {"fp32": "float32", "bf16": "bfloat16"}[r["prec"]]
    row = precision_rows(runs)[0]["measures"]["training step (s)"]
    assert row["ratio"] == pytest.approx(row["bf16"] / row["fp32"])
