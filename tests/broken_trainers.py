"""Trainers broken on purpose, to show that the learning tests can fail.

    BROKEN=random_labels|nothing_optimised python tests/broken_trainers.py train.py [train.py arguments]

replaces every prompt-learning trainer of the project by a broken copy under the same name, then
runs train.py as ``python train.py`` would:
  random_labels      every training label is replaced by a class drawn at random: the labels say nothing
                     about the images (labels shuffled within a batch would not do: in a batch of 4 a
                     quarter of them stay right, and LLaMP learns from that);
  nothing_optimised  the loss is computed but no learned tensor is ever updated
                     (as if the prompts were left out of the optimiser).
"""
import os
import runpy
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402
from dassl.engine import TRAINER_REGISTRY  # noqa: E402

import trainers  # noqa: E402,F401  (registers the trainers)

METHODS = ("CoOp", "CoCoOp", "KgCoOp", "MaPLe", "PromptSRC", "LLaMP")


def random_labels(base):
    class Broken(base):
        def forward_backward(self, batch):
            labels = batch["label"]
            return super().forward_backward(dict(batch, label=torch.randint_like(labels, self.num_classes)))

    return Broken


def nothing_optimised(base):
    class Broken(base):
        def optimization_step(self, loss, optimizer, *args, **kwargs):
            optimizer.zero_grad(set_to_none=True)

    return Broken


BREAKAGES = {"random_labels": random_labels, "nothing_optimised": nothing_optimised}


def register_broken(kind: str) -> None:
    for name in METHODS:
        broken = BREAKAGES[kind](TRAINER_REGISTRY.get(name))
        broken.__name__ = broken.__qualname__ = name  # Dassl registers (and cleans the config) by class name
        TRAINER_REGISTRY.register(broken, force=True)


if __name__ == "__main__":
    register_broken(os.environ["BROKEN"])
    sys.argv = sys.argv[1:]
    runpy.run_path(os.path.join(REPO, sys.argv[0]), run_name="__main__")
