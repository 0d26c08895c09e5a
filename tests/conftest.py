"""Shared fixtures: tiny models and synthetic data, written once per test session.

Nothing here reaches the network: the hub is switched off before any
Hugging Face import, and every model is built from a config with random weights.
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
    """Paths of the tiny CLIP and Llama written by ``python -m llamp.tiny``."""
    from llamp.tiny import write_tiny_models

    return write_tiny_models(str(tmp_path_factory.mktemp("tiny_models")))


@pytest.fixture(scope="session")
def tiny_clip(tiny_models):
    from llamp.clip_loading import load_clip

    return load_clip("ViT-B/16", tiny_models["clip"])
