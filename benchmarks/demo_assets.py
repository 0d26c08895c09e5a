"""The demo's files for the benchmarks that run train.py's trainers: tiny CLIP and LLM with random weights,
and the Synthetic dataset with its knowledge cache, written by the project's own CLIs."""
from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_demo(work: str) -> tuple[dict[str, str], str]:
    """The tiny models under ``work/tiny`` (their folders by name) and the data root ``work/data``."""
    from llamp.tiny.models import write_tiny_models

    tiny = write_tiny_models(os.path.join(work, "tiny"), pretrained=False)
    data = os.path.join(work, "data")
    subprocess.run([sys.executable, "-m", "llm_prompts", "build", "--root", data, "--dataset-config-file",
                    os.path.join(REPO, "configs/datasets/synthetic.yaml"), "--llm", tiny["llm"],
                    "--clip", tiny["clip"], "--quiet"], cwd=REPO, check=True, capture_output=True)
    return tiny, data
