"""Shared fixtures: tiny models and synthetic data, written once per test session.

Nothing here reaches the network: the hub is switched off before any
Hugging Face import, and every model is built from a config: with random
weights (``tiny_models``), or with the CLIP pre-trained on Synthetic-style
drawings as the demo's (``pretrained_tiny_models``, for the tests that check learning).
The data: ``data_root`` (Synthetic), ``synthetic_cache`` (another root: Synthetic and the
knowledge cache LLaMP trains with) and ``built`` (a cache built in ``data_root`` by the CLI).
"""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Paths of the tiny random-weight CLIP and Llama written by ``python -m llamp.tiny --random-weights``."""
    from llamp.tiny.models import write_tiny_models

    return write_tiny_models(str(tmp_path_factory.mktemp("tiny_models")), pretrained=False)


@pytest.fixture(scope="session")
def pretrained_tiny_models(tmp_path_factory):
    """The tiny models of ``python -m llamp.tiny``: the CLIP pre-trained (1-2 min), the LLM random."""
    from llamp.tiny.models import write_tiny_models

    return write_tiny_models(str(tmp_path_factory.mktemp("pretrained_tiny_models")), pretrained=True)


@pytest.fixture(scope="session")
def tiny_clip(tiny_models):
    from llamp.clip.loading import load_clip

    return load_clip("ViT-B/16", tiny_models["clip"])


@pytest.fixture(scope="module")
def clip(tiny_models):
    """A CLIP of the test module's own (the prompt learners switch its gradients off)."""
    from llamp.clip.loading import load_clip

    return load_clip("ViT-B/16", tiny_models["clip"])


@pytest.fixture(scope="module")
def tiny_llm(tiny_models):
    """The tiny LLM and its tokenizer, loaded as the cache build loads them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_models["llm"], local_files_only=True).eval()
    return model, AutoTokenizer.from_pretrained(tiny_models["llm"], local_files_only=True)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """The data root of the tests that need Synthetic: it draws itself there on first use (the same
    drawing every time), and few-shot samples are cached there as train.py caches them."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def synthetic_cache(tiny_models, tmp_path_factory):
    """A data root holding Synthetic and its knowledge cache built with the tiny LLM (default location)."""
    from llm_prompts.__main__ import main

    root = tmp_path_factory.mktemp("llamp_data")
    code = main(["build", "--root", str(root), "--dataset-config-file",
                 os.path.join(REPO, "configs", "datasets", "synthetic.yaml"),
                 "--llm", tiny_models["llm"], "--clip", tiny_models["clip"], "--spacy-model", "none", "--quiet"])
    assert code == 0
    return {"root": str(root), "cache": str(root / "synthetic" / "llamp_cache" / "llm")}


@pytest.fixture(scope="session")
def built(data_root, tiny_models):
    """A cache built once by ``python -m llm_prompts build`` at its default place in ``data_root``."""
    from llm_prompts.__main__ import main
    from llm_prompts_cli import build_argv

    assert main(build_argv(data_root, tiny_models)) == 0
    return str(data_root / "synthetic" / "llamp_cache" / "llm")
