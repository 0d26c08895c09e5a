"""One method at real widths, built and stepped by the trainers' own functions, without Dassl's loop around them.

A bench is built from a job (the asset paths, the class names, ``prec``: the
method's TRAINER.<NAME>.PREC, "fp32" or "bf16", and optionally ``config``: a
config file under configs/trainers/ instead of the method's reference config,
e.g. its demo.yaml with the tiny models) and offers what the process
runner asks of it: ``step`` (seconds of its parts), ``text_features`` (once per
evaluation), ``eval_batch``, ``checkpoint_bytes`` and ``memory_bytes``.

Precision as the trainers place it (``trainers.precision.Precision`` on "cpu"):
frozen weights cast by ``cast_frozen`` once the model is built, the forward with
its losses, the text features and the evaluation under ``autocast``, trained
tensors and the optimiser state in fp32, LLaMP's K/V rows read in ``cache_dtype``.
"""
from __future__ import annotations

import os
import random
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from benchmarks.real_width_assets import DATASET, kv_bytes

if TYPE_CHECKING:
    from trainers.precision import Precision

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reference_cfg(config_file: str, precision_key: str, prec: str = "fp32"):
    """The method's reference config as train.py reads it, with PREC ``prec`` (the reference configs' own PREC
    is for a GPU; this benchmark runs on CPU in fp32 or bf16)."""
    from dassl.config import get_cfg_default

    import trainers

    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "trainers", config_file))
    cfg.merge_from_list([precision_key, prec])
    return cfg


def job_precision(job: dict, trainer) -> Precision:
    """The job's precision (default fp32) as ``trainer`` (the Dassl trainer class) places tensors on CPU."""
    from trainers.precision import Precision, checked_precision

    prec = checked_precision(job.get("prec", "fp32"), trainer.precisions, f"TRAINER.{trainer.__name__.upper()}.PREC")
    return Precision(prec, "cpu", trainer.amp_dtype_on_cuda)


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def optimizer_state_bytes(optim: torch.optim.Optimizer) -> int:
    """Bytes of the tensors in the optimiser's state_dict (AdamW: exp_avg, exp_avg_sq and step per tensor)."""
    return tensor_bytes(v for state in optim.state_dict()["state"].values() for v in state.values()
                        if isinstance(v, torch.Tensor))


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
    precision: Precision
    max_norm = 0.0  # gradient clipping, as the trainer passes it to optimizer_step
    text: torch.Tensor  # the evaluation's text features, once text_features has run

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The summed training loss, and the seconds of any part of the forward timed apart."""
        raise NotImplementedError

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        from trainers.optim import optimizer_step

        start = time.perf_counter()
        with self.precision.autocast():  # the forward and its losses, as the trainers' forward_backward
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

    def memory_bytes(self) -> dict:
        """What the model holds, in bytes: trained tensors, frozen weights (by dtype), buffers, the optimiser's
        state (its state_dict, so after at least one step), the evaluation's text features; per class where
        they grow with the classes."""
        params = list(self.model.parameters())
        frozen: dict[str, int] = {}
        for p in params:
            if not p.requires_grad:
                key = str(p.dtype).removeprefix("torch.")
                frozen[key] = frozen.get(key, 0) + p.numel() * p.element_size()
        classes = self.num_classes
        out = {"trainable": tensor_bytes(p for p in params if p.requires_grad), "frozen": frozen,
               "buffers": tensor_bytes(self.model.buffers()), "optimizer_state": optimizer_state_bytes(self.optim)}
        text = getattr(self, "text", None)
        if text is not None:
            out["text_features_per_class"] = text.numel() * text.element_size() / classes
        return out


class LLaMPBench(TrainedBench):
    """The LLaMP trainer's model, cache reads, parameter groups and optimiser."""

    def __init__(self, job: dict):
        from llamp.clip.loading import load_clip
        from llamp.knowledge_cache.reader import KnowledgeCache
        from llamp.knowledge_cache.staging import KVStager
        from llamp.llm.tail import load_decoder_tail
        from llamp.model import LLaMPModel
        from trainers.llamp import LLAMP_KEYS, LLaMP, param_groups
        from trainers.optim import build_optimizer

        self.precision = job_precision(job, LLaMP)
        cfg = reference_cfg(job.get("config", "LLaMP/base2new.yaml"), "TRAINER.LLAMP.PREC", self.precision.name)
        c = cfg.TRAINER.LLAMP
        clip = load_clip(cfg.MODEL.BACKBONE.NAME, job["clip"])
        tail = load_decoder_tail(job["llm"], c.NUM_DECODER_LAYERS)
        self.cache = KnowledgeCache.open(job["cache"], expected_llm=tail.identity(), num_layers=c.NUM_DECODER_LAYERS,
                                         expected_clip=clip)
        rows = self.cache.select(job["classnames"])
        self.model = LLaMPModel(clip.model, clip.tokenizer, tail, job["classnames"], LLAMP_KEYS.config(c),
                                self.cache.targets(rows))
        self.num_classes = len(job["classnames"])
        self.precision.cast_frozen(self.model)  # as LLaMP.build_model: after the model is on its device
        self.stager = KVStager(self.cache, rows, torch.device("cpu"), self.precision.cache_dtype)
        groups = param_groups(self.model, cfg.OPTIM.LR, c.LORA_LR)
        self.optim = build_optimizer(self.model, cfg.OPTIM, param_groups=groups)
        self.max_norm = c.GRAD_CLIP
        self.draw = random.Random(0)  # template per step, as the trainer draws it
        self.model.train()

    @property
    def num_templates(self) -> int:
        """Query templates in the cache: one evaluation computes the text features of each."""
        return self.cache.num_templates

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
        self.kv_bytes_per_class = kv_bytes(kv) / self.num_classes  # one template's rows, as the device holds them
        runs = {
            "llm_decoder": lambda: self.model.decoder(kv),
            "decoder_and_text_tower": lambda: self.model.text_features(kv),
            "vision_tower_prompts_lora": lambda: self.model.image_features(images),
        }
        out = {}
        for name, run in runs.items():
            start = time.perf_counter()
            with self.precision.autocast():
                result = run()
            result.float().sum().backward()
            out[name] = time.perf_counter() - start
        self.optim.zero_grad()
        out["text_tower"] = out.pop("decoder_and_text_tower") - out["llm_decoder"]
        start = time.perf_counter()
        with self.precision.autocast():
            self.model.teacher_image_features(images)
        out["teacher_vision_tower"] = time.perf_counter() - start
        return out

    def text_features(self) -> None:
        """Every template's text features, as the trainer computes them once per evaluation, under autocast
        (the seconds spent in the LLM prompt decoder kept apart in ``text_parts``)."""
        marks = []
        decoder = self.model.decoder
        hooks = [decoder.register_forward_pre_hook(lambda *_: marks.append(-time.perf_counter())),
                 decoder.register_forward_hook(lambda *_: marks.append(time.perf_counter()))]
        start = time.perf_counter()
        features = []
        with self.precision.autocast():
            for t in range(self.cache.num_templates):
                kv = self.stager.get(t)
                self.kv_bytes_per_class = kv_bytes(kv) / self.num_classes
                features.append(F.normalize(self.model.text_features(kv).float(), dim=-1))
                del kv
        self.text = torch.stack(features)  # [T, C, embed]
        total = time.perf_counter() - start
        for hook in hooks:
            hook.remove()
        self.text_parts = {"llm_decoder": sum(marks), "rest": total - sum(marks)}

    def eval_batch(self, images: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast():
            return self.model.class_probabilities(images, self.text)

    def memory_bytes(self) -> dict:
        out = super().memory_bytes()
        if hasattr(self, "kv_bytes_per_class"):
            out["kv_per_class_template"] = self.kv_bytes_per_class
            out["kv_dtype"] = str(self.precision.cache_dtype).removeprefix("torch.")
        return out


class MaPLeBench(TrainedBench):
    """The MaPLe trainer's prompt learner and optimiser (PromptLearningTrainer's step)."""

    def __init__(self, job: dict):
        from llamp.clip.loading import load_clip
        from trainers.maple import MaPLe, build_maple
        from trainers.prompt_trainer import build_prompt_optimizer

        self.precision = job_precision(job, MaPLe)
        cfg = reference_cfg(job.get("config", "MaPLe/vit_b16_base2new.yaml"), "TRAINER.MAPLE.PREC",
                            self.precision.name)
        clip = load_clip(cfg.MODEL.BACKBONE.NAME, job["clip"])
        self.model = build_maple(clip, job["classnames"], cfg.TRAINER.MAPLE)
        self.num_classes = len(job["classnames"])
        self.precision.cast_frozen(self.model)  # as PromptLearningTrainer.build_model
        self.optim = build_prompt_optimizer(self.model, cfg.OPTIM)
        self.model.train()

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        losses, _ = self.model.losses(images, labels)
        return sum(losses.values()), {}

    def text_features(self) -> None:
        with self.precision.autocast():
            self.text = self.model.text_features()  # MaPLe's forward computes these again for every batch

    def eval_batch(self, images: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast():  # as PromptLearningTrainer.model_inference
            return self.model(images).float()


class ZeroShotBench:
    """Zero-shot CLIP as its trainer evaluates: text features once, then image features per batch."""

    def __init__(self, job: dict):
        from llamp.clip.loading import load_clip
        from llamp.clip.tokenizer import CONTEXT_LENGTH
        from llamp.templates import configured_templates
        from trainers.zsclip import ZeroshotCLIP

        self.precision = job_precision(job, ZeroshotCLIP)
        cfg = reference_cfg(job.get("config", "ZeroshotCLIP/vit_b16.yaml"), "TRAINER.ZEROSHOTCLIP.PREC",
                            self.precision.name)
        node = cfg.TRAINER.ZEROSHOTCLIP
        self.clip = load_clip(cfg.MODEL.BACKBONE.NAME, job["clip"])
        self.clip.model.to(dtype=self.precision.frozen_dtype)  # as ZeroshotCLIP.build_model
        self.templates = configured_templates(node.TEMPLATES, DATASET, "TRAINER.ZEROSHOTCLIP.TEMPLATES",
                                              ensemble=node.ENSEMBLE).templates
        self.classnames = job["classnames"]
        self.text_positions = CONTEXT_LENGTH

    def eval(self) -> None:
        pass

    def text_features(self) -> None:
        """As ZeroshotCLIP.build_model: CLIP's prompt ensembling over the templates."""
        from llamp.class_features import MEAN_OF_NORMALISED, template_class_features

        with self.precision.autocast():
            self.text = template_class_features(self.clip.encode_text, self.classnames, self.templates,
                                                MEAN_OF_NORMALISED)

    def eval_batch(self, images: torch.Tensor) -> torch.Tensor:
        from trainers.zsclip import ZeroshotCLIP

        # the trainer's own method, on a stand-in: its logits need only these four attributes
        trainer = SimpleNamespace(clip=self.clip.model, dtypes=self.precision, autocast=self.precision.autocast,
                                  text_features=self.text)
        return ZeroshotCLIP.model_inference(trainer, images)


BENCHES = {"LLaMP": LLaMPBench, "MaPLe": MaPLeBench, "ZeroshotCLIP": ZeroShotBench}
METHODS = tuple(BENCHES)  # the report's columns, in this order
