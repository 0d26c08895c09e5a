"""LLaMP as a Dassl trainer: the model lives in ``llamp.model``; this file wires data, cache and optimiser."""
from __future__ import annotations

import os
import random

import torch
from dassl.engine import TRAINER_REGISTRY
from dassl.metrics import compute_accuracy
from yacs.config import CfgNode as CN

from llamp.errors import ConfigError
from llamp.knowledge_cache.files import build_command, default_cache_folder
from llamp.knowledge_cache.reader import KnowledgeCache
from llamp.knowledge_cache.staging import KVStager
from llamp.llm.tail import load_decoder_tail
from llamp.model import LLaMPConfig, LLaMPModel

from .base import ClipTrainer
from .checkpoint import epoch_file_name
from .config import MethodKeys
from .distributed import DeepSpeedRunner, deepspeed_device, is_main_process, shard_train_loader, world_size
from .optim import build_optimizer

def llamp_trainer_keys(c: CN) -> None:
    """TRAINER.LLAMP's keys beyond the method's (PREC: fp32 | bf16 | amp)."""
    # The LLM (Hugging Face folder, or hub name in the local cache): only its last
    # NUM_DECODER_LAYERS layers and final norm are read.
    c.LLM_PATH = ""
    # Knowledge cache built by `python -m llm_prompts build`; empty: the build's default,
    # <dataset folder>/llamp_cache/<LLM folder name>.
    c.CACHE_DIR = ""
    c.NUM_DECODER_LAYERS = 1  # N: LLM layers copied into the prompt decoder
    c.LORA_LR = 2e-5  # LoRA (and the visual projection if trained); OPTIM.LR for the rest
    c.GRAD_CLIP = 1.0  # max gradient norm; 0 disables
    # DeepSpeed (ZeRO-2, bf16 per the JSON) when CUDA is present, launched as `deepspeed train.py ...`.
    c.DEEPSPEED = False
    c.DEEPSPEED_CONFIG = "configs/deepspeed/zero2_bf16.json"


# The decoder copy's trained projections keep their key names of the LLM's modules (TRAIN_Q_PROJ, ...).
LLAMP_KEYS = MethodKeys("LLAMP", LLaMPConfig, {"train_q": "TRAIN_Q_PROJ", "train_o": "TRAIN_O_PROJ",
                                               "train_kv": "TRAIN_KV_PROJ"}, llamp_trainer_keys)


def param_groups(model: torch.nn.Module, lr: float, lora_lr: float) -> list[dict]:
    """The trainable tensors as optimiser groups: LoRA (and the visual projection if trained) at ``lora_lr``,
    the rest at ``lr``."""
    slow, fast = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (slow if ("lora_" in name or "visual_projection" in name) else fast).append(p)
    groups = [{"params": fast, "lr": lr}]
    if slow:
        groups.append({"params": slow, "lr": lora_lr})
    return groups


@TRAINER_REGISTRY.register()
class LLaMP(ClipTrainer):
    """LLaMP: LLM-decoded deep text prompts, visual prompts and LoRA, four-term loss."""

    precisions = ("fp32", "bf16", "amp")  # fp16 overflows in the LLM's activations
    amp_dtype_on_cuda = torch.bfloat16
    method_keys = LLAMP_KEYS
    field_keys = {"num_layers": "NUM_DECODER_LAYERS", "llm_path": "LLM_PATH"}

    def build_data_loader(self):
        super().build_data_loader()
        self.train_loader_x = shard_train_loader(self.train_loader_x, self.cfg)
        per_process = self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE
        processes = world_size() if deepspeed_device(self.cfg) else 1
        print(f"Effective batch: {per_process} per process x {processes} process(es) = {per_process * processes} "
              "images per optimiser step (DATALOADER.TRAIN_X.BATCH_SIZE is per process)")

    # ---- model -----------------------------------------------------------
    def open_cache(self, tail, clip) -> KnowledgeCache:
        c = self.trainer_cfg
        folder = c.CACHE_DIR or default_cache_folder(self.dm.dataset.dataset_dir, c.LLM_PATH)
        build = build_command(self.cfg.DATASET.ROOT, c.LLM_PATH, self.cfg.MODEL.BACKBONE.PATH or "<CLIP>",
                              c.NUM_DECODER_LAYERS)
        print(f"Knowledge cache: {folder}")
        return KnowledgeCache.open(folder, expected_llm=tail.identity(), num_layers=c.NUM_DECODER_LAYERS,
                                   build_hint=build, expected_clip=clip)

    def build_model(self):
        c = self.trainer_cfg
        if not c.LLM_PATH:
            raise ConfigError("TRAINER.LLAMP.LLM_PATH is empty: set it to the LLM's Hugging Face folder")
        clip = self.load_clip()
        tail = load_decoder_tail(c.LLM_PATH, c.NUM_DECODER_LAYERS)
        self.cache = self.open_cache(tail, clip)
        classnames = self.dm.dataset.classnames
        self.class_rows = self.cache.select(classnames)  # base, new or all: looked up by name
        targets = self.cache.targets(self.class_rows)  # made with this CLIP: open_cache checked its digest

        self.model = LLaMPModel(clip.model, clip.tokenizer, tail, classnames, self.method_keys.config(c), targets)
        self.model.to(self.device)
        self.cast_frozen_parameters(self.model)
        self.kv_stager = KVStager(self.cache, self.class_rows, self.device, self.dtypes.cache_dtype)
        self._next_template = None
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        print(f"LLaMP: {trainable:,} trainable parameters, {self.cache.num_templates} query templates, "
              f"{len(classnames)} classes")

        groups = param_groups(self.model, self.cfg.OPTIM.LR, c.LORA_LR)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM, param_groups=groups)
        self.sched = self.build_scheduler(self.optim)
        self.register_model("llamp", self.model, self.optim, self.sched)
        # The DeepSpeed engine is built in before_train, once a resume has restored the weights
        # (ZeRO copies them into its own fp32 master partitions when it starts); --eval-only builds none.
        self.deepspeed = None

    def before_train(self):
        super().before_train()  # Dassl's resume: weights, optimiser and schedule from our checkpoint
        self.deepspeed = DeepSpeedRunner.maybe_create(self.cfg, self.model, self.optim, self.dtypes.deepspeed_bf16)
        if self.deepspeed is not None:  # the model's logit-scale clamp then reaches ZeRO's master copy too
            self.model.clamp_parameter = self.deepspeed.clamp_parameter_
        if self.deepspeed is not None and self.start_epoch > 0:
            self.deepspeed.load_state(self.deepspeed_folder(self.cfg.RESUME or self.output_dir),
                                      epoch_file_name(self.start_epoch))

    def deepspeed_folder(self, directory: str) -> str:
        return os.path.join(directory, "llamp", "deepspeed")

    # ---- training --------------------------------------------------------
    def forward_backward(self, batch):
        images, labels = self.parse_batch_train(batch)
        # One template's cache per step, drawn one step ahead so that its rows load during this step
        # (within an epoch only: each epoch's draws then start from that epoch's seed).
        num_templates = self.cache.num_templates
        template = self._next_template if self._next_template is not None else random.randrange(num_templates)
        kv = self.kv_stager.get(template)
        self._next_template = None
        if self.batch_idx + 1 < self.num_batches:
            self._next_template = random.randrange(num_templates)
            self.kv_stager.prefetch(self._next_template)
        with self.autocast():
            losses, logits = self.model.losses(images, labels, kv)
        # The decoder's attention saved its own copy (cache and new tokens together): the rows read need not
        # stay beside the backward's gradients (their size: README, Performance).
        del kv
        loss = sum(losses.values())
        if self.deepspeed is not None:
            self.detect_anomaly(loss)
            self.deepspeed.backward_and_step(loss)
        else:
            self.optimization_step(loss, self.optim, self.trainer_cfg.GRAD_CLIP)

        summary = {"loss": loss.item(), **{k: v.item() for k, v in losses.items()},
                   "acc": compute_accuracy(logits, labels)[0].item()}
        self.advance_lr_schedule()
        return summary

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    # ---- evaluation ------------------------------------------------------
    @torch.no_grad()
    def template_text_features(self) -> torch.Tensor:
        """Normalised text features of every template ``[T, C, embed]``, computed once per evaluation."""
        self.model.eval()
        with self.autocast():
            return self.model.template_text_features(self.staged_templates())

    def staged_templates(self):
        """Every template's ``(keys, values, mask)`` in turn, the next one loading while this one computes."""
        for t in range(self.cache.num_templates):
            kv = self.kv_stager.get(t)
            if t + 1 < self.cache.num_templates:
                self.kv_stager.prefetch(t + 1)
            yield kv

    def test(self, split=None):
        if not is_main_process():
            # only rank 0 evaluates; -inf never counts as a new best (TEST.FINAL_MODEL best_val)
            return float("-inf")
        self.eval_text_features = self.template_text_features()
        try:
            return super().test(split)
        finally:
            del self.eval_text_features

    @torch.no_grad()
    def model_inference(self, images):
        with self.autocast():
            return self.model.class_probabilities(images, self.eval_text_features)

    # ---- bookkeeping -----------------------------------------------------
    def before_epoch(self):
        super().before_epoch()
        self._next_template = None
        sampler = getattr(self.train_loader_x, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)  # a new shuffle per epoch on every rank

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        every_rank = not model_name or world_size() == 1  # an epoch checkpoint is saved on every rank
        if self.deepspeed is not None and every_rank:
            if not model_name:
                # every rank writes its optimiser partition; before our checkpoint, whose pointer file then
                # names an epoch whose state is complete
                self.deepspeed.save_state(self.deepspeed_folder(directory), epoch_file_name(epoch + 1))
            # the checkpoint keeps the fp32 masters (the module holds their bf16 copies in bf16); gathering
            # them is collective: every rank takes part
            self._masters = self.deepspeed.master_weights(self.model)
        try:
            if is_main_process():
                super().save_model(epoch, directory, is_best, val_result, model_name)
        finally:
            self._masters = None

    _masters = None

    def checkpoint_state(self, name):
        # fp32 on disk whatever the training precision; trainable tensors only
        if self._masters is not None:
            return self._masters
        return {k: v.float() for k, v in super().checkpoint_state(name).items()}

    def optimizer_state(self, name):
        # under DeepSpeed the optimiser state is partitioned across ranks: each saves its own (save_model)
        return None if self.deepspeed is not None else super().optimizer_state(name)
