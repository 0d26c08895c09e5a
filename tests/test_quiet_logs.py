"""Quiet logs: importing the toolbox prints no warnings, and a command whose output is not a terminal
shows no progress bars. (train.py's own output is checked in test_templates.py.)"""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(*args):
    env = dict(os.environ, PYTHONPATH=REPO, HF_HUB_OFFLINE="1")
    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "PYTHONWARNINGS"):
        env.pop(name, None)  # what a user's shell has: none of the switches this code sets
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_importing_the_toolbox_prints_no_warnings():
    # Dassl (wilds -> outdated, from a background thread that outlives the import) and openai-clip
    # import the deprecated pkg_resources; the process waits for that thread before exiting.
    proc = run_python("-c", "import trainers, vl_datasets, llm_prompts.dataset\n"
                            "from llamp.clip.tokenizer import bpe_file_path\nbpe_file_path()")
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr and "pkg_resources" not in proc.stderr, proc.stderr


def test_no_progress_bars_when_the_output_is_not_a_terminal(tmp_path):
    proc = run_python("-m", "llamp.tiny", "--out", str(tmp_path), "--random-weights")  # saves both tiny models
    assert proc.returncode == 0, proc.stderr
    assert "Writing model shards" not in proc.stderr and "it/s]" not in proc.stderr, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
