"""One method at real widths, built and stepped by the trainers' own functions, without Dassl's loop around them.

A bench is built from a job (the asset paths and the class names) and offers
what the process runner asks of it: ``step`` (seconds of its parts),
``text_features`` (once per evaluation), ``eval_batch`` and ``checkpoint_bytes``.
"""
from __future__ import annotations

import contextlib
import os
import random
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from benchmarks.real_width_assets import DATASET

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reference_cfg(config_file: str, precision_key: str):
    """The method's reference config as train.py reads it, in fp32 (CPU)."""
    from dassl.config import get_cfg_default

    import trainers

    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "trainers", config_file))
    cfg.merge_from_list([precision_key, "fp32"])
    return cfg


class _ByteCounter:
    """A write-only file that only counts: checkpoint sizes without holding the bytes."""

    def __init__(self):
        self.bytes = 0

    def write(self, data) -> int:
        self.bytes += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def saved_bytes(obj) -> int:
    sink = _ByteCounter()
    torch.save(obj, sink)
    return sink.bytes


class TrainedBench:
    """A method with a training step: its model, its trainer's optimiser and the trainers' update step."""

    model: torch.nn.Module
    optim: torch.optim.Optimizer
    max_norm = 0.0  # gradient clipping, as the trainer passes it to optimizer_step

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The summed training loss, and the seconds of any part of the forward timed apart."""
        raise NotImplementedError

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        from trainers.optim import optimizer_step

        start = time.perf_counter()
        loss, forward_parts = self.loss(images, labels)
        forward = time.perf_counter()
        backward = []  # when the backward ended: the rest is clipping and the optimiser
        optimizer_step(loss, self.optim, self.max_norm, after_backward=lambda: backward.append(time.perf_counter()))
        end = time.perf_counter()
        return {"forward": forward - start, **forward_parts, "backward": backward[0] - forward,
                "optimiser": end - backward[0]}

    @property
    def text_positions(self) -> int:
        return int(self.model.prompts.input_ids.shape[1])

    def eval(self) -> None:
        self.model.eval()

    def checkpoint_bytes(self) -> dict[str, int]:
        """What the trainers save: trainable tensors in fp32 (the model), plus the optimiser state (resume)."""
        state = {k: p.detach().float() for k, p in self.model.named_parameters() if p.requires_grad}
        return {"model": saved_bytes({"state_dict": state}),
                "resume": saved_bytes({"state_dict": state, "optimizer": self.optim.state_dict()})}


class LLaMPBench(TrainedBench):
    """The LLaMP trainer's model, cache reads, parameter groups and optimiser."""

    def __init__(self, job: dict):
        from llamp.clip.loading import load_clip
        from llamp.knowledge_cache.reader import KnowledgeCache
        from llamp.knowledge_cache.staging import KVStager
        from llamp.llm.tail import load_decoder_tail
        from llamp.model import LLaMPModel
        from trainers.llamp import LLAMP_KEYS, param_groups
        from trainers.optim import build_optimizer

        cfg = reference_cfg("LLaMP/base2new.yaml", "TRAINER.LLAMP.PREC")
        c = cfg.TRAINER.LLAMP
        clip = load_clip(cfg.MODEL.BACKBONE.NAME, job["clip"])
        tail = load_decoder_tail(job["llm"], c.NUM_DECODER_LAYERS)
        self.cache = KnowledgeCache.open(job["cache"], expected_llm=tail.identity(), num_layers=c.NUM_DECODER_LAYERS,
                                         expected_clip=clip)
        rows = self.cache.select(job["classnames"])
        self.model = LLaMPModel(clip.model, clip.tokenizer, tail, job["classnames"], LLAMP_KEYS.config(c),
                                self.cache.targets(rows))
        self.stager = KVStager(self.cache, rows, torch.device("cpu"), torch.float32)
        groups = param_groups(self.model, cfg.OPTIM.LR, c.LORA_LR)
        self.optim = build_optimizer(self.model, cfg.OPTIM, param_groups=groups)
        self.max_norm = c.GRAD_CLIP
        self.draw = random.Random(0)  # template per step, as the trainer draws it
        self.model.train()

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        start = time.perf_counter()
        kv = self.stager.get(self.draw.randrange(self.cache.num_templates))
        read = time.perf_counter() - start
        losses, _ = self.model.losses(images, labels, kv)
        # kv is dropped on return, as the trainer drops it: not held through the backward
        return sum(losses.values()), {"kv_read": read}

    def parts(self, images: torch.Tensor) -> dict[str, float]:
        """Forward + backward of each part of a step on its own (no optimiser step): where the time goes."""
        kv = self.stager.get(0)
        runs = {
            "llm_decoder": lambda: self.model.decoder(kv),
            "decoder_and_text_tower": lambda: self.model.text_features(kv),
            "vision_tower_prompts_lora": lambda: self.model.image_features(images),
        }
        out = {}
        for name, run in runs.items():
            start = time.perf_counter()
            run().float().sum().backward()
            out[name] = time.perf_counter() - start
        self.optim.zero_grad()
        out["text_tower"] = out.pop("decoder_and_text_tower") - out["llm_decoder"]
        start = time.perf_counter()
        self.model.teacher_image_features(images)
        out["teacher_vision_tower"] = time.perf_counter() - start
        return out

    def text_features(self) -> None:
        """Every template's text features, as the trainer computes them once per evaluation (the seconds
        spent in the LLM prompt decoder kept apart in ``text_parts``)."""
        marks = []
        decoder = self.model.decoder
        hooks = [decoder.register_forward_pre_hook(lambda *_: marks.append(-time.perf_counter())),
                 decoder.register_forward_hook(lambda *_: marks.append(time.perf_counter()))]
        start = time.perf_counter()
        features = []
        for t in range(self.cache.num_templates):
            features.append(F.normalize(self.model.text_features(self.stager.get(t)).float(), dim=-1))
        self.text = torch.stack(features)  # [T, C, embed]
        total = time.perf_counter() - start
        for hook in hooks:
            hook.remove()
        self.text_parts = {"llm_decoder": sum(marks), "rest": total - sum(marks)}

    def eval_batch(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.class_probabilities(images, self.text)


class MaPLeBench(TrainedBench):
    """The MaPLe trainer's prompt learner and optimiser (PromptLearningTrainer's step)."""

    def __init__(self, job: dict):
        from llamp.clip.loading import load_clip
        from trainers.maple import build_maple
        from trainers.prompt_trainer import build_prompt_optimizer

        cfg = reference_cfg("MaPLe/vit_b16_base2new.yaml", "TRAINER.MAPLE.PREC")
        clip = load_clip(cfg.MODEL.BACKBONE.NAME, job["clip"])
        self.model = build_maple(clip, job["classnames"], cfg.TRAINER.MAPLE)
        self.optim = build_prompt_optimizer(self.model, cfg.OPTIM)
        self.model.train()

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        losses, _ = self.model.losses(images, labels)
        return sum(losses.values()), {}

    def text_features(self) -> None:
        self.text = self.model.text_features()  # MaPLe's forward computes these again for every batch

    def eval_batch(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


class ZeroShotBench:
    """Zero-shot CLIP as its trainer evaluates: text features once, then image features per batch."""

    def __init__(self, job: dict):
        from llamp.clip.loading import load_clip
        from llamp.clip.tokenizer import CONTEXT_LENGTH
        from llamp.templates import configured_templates

        cfg = reference_cfg("ZeroshotCLIP/vit_b16.yaml", "TRAINER.ZEROSHOTCLIP.PREC")
        node = cfg.TRAINER.ZEROSHOTCLIP
        self.clip = load_clip(cfg.MODEL.BACKBONE.NAME, job["clip"])
        self.templates = configured_templates(node.TEMPLATES, DATASET, "TRAINER.ZEROSHOTCLIP.TEMPLATES",
                                              ensemble=node.ENSEMBLE).templates
        self.classnames = job["classnames"]
        self.text_positions = CONTEXT_LENGTH

    def eval(self) -> None:
        pass

    def text_features(self) -> None:
        """As ZeroshotCLIP.build_model: CLIP's prompt ensembling over the templates."""
        from llamp.class_features import MEAN_OF_NORMALISED, template_class_features

        self.text = template_class_features(self.clip.encode_text, self.classnames, self.templates,
                                            MEAN_OF_NORMALISED)

    def eval_batch(self, images: torch.Tensor) -> torch.Tensor:
        from trainers.zsclip import ZeroshotCLIP

        # the trainer's own method, on a stand-in: its logits need only these four attributes
        trainer = SimpleNamespace(clip=self.clip.model, weight_dtype=torch.float32,
                                  autocast=contextlib.nullcontext, text_features=self.text)
        return ZeroshotCLIP.model_inference(trainer, images)


BENCHES = {"LLaMP": LLaMPBench, "MaPLe": MaPLeBench, "ZeroshotCLIP": ZeroShotBench}
METHODS = tuple(BENCHES)  # the report's columns, in this order
