"""What every CLIP trainer here adds to Dassl's ``TrainerX``.

* loading the shared CLIP backbone from MODEL.BACKBONE (and checking INPUT.SIZE);
* learning-rate schedules from ``trainers.optim`` (Dassl's break on torch >= 2.2);
* checkpoints that hold the trainable parameters only, read with
  ``weights_only=True`` (Dassl's ``torch.load`` fails on current torch);
* the config node TRAINER.<NAME> and its early checks (precision: fp32, fp16,
  bf16 weights, or amp, fp32 weights with autocast; hand-written templates);
* random streams derived from cfg.SEED (``trainers.reproducibility``): the same
  run whether the few-shot sample was drawn or read, whatever the number of
  loader workers, and resumed runs that continue exactly.
"""
from __future__ import annotations

import os

import torch
from dassl.data import DataManager
from dassl.engine import TrainerX

from llamp.clip.loading import LoadedCLIP, load_clip
from llamp.errors import ConfigError, naming
from llamp.templates import TemplateChoice, configured_templates, describe_choice

from .checkpoint import (BEST_NAME, epoch_file_name, latest_checkpoint, load_checkpoint, resume_checkpoints,
                         save_checkpoint)
from .config import MethodKeys
from .distributed import is_main_process
from .optim import build_lr_scheduler, optimizer_step, steps_every_iteration
from .precision import PRECISIONS, Precision, checked_precision
from .reproducibility import SeededAugmentation, derived_seed, seed_all


class ClipTrainer(TrainerX):
    """Base for the trainers of this project; a subclass writes ``build_model`` and the loss."""

    # The values TRAINER.<NAME>.PREC may take for this trainer.
    precisions = PRECISIONS
    # The method's config dataclass as this trainer's keys (None: the trainer has only its own keys).
    method_keys: MethodKeys | None = None
    # Other settings the library's errors name by field: field -> key in this trainer's node.
    field_keys: dict[str, str] = {}

    def __init__(self, cfg):
        with naming(self.config_names()):  # the library's errors name fields: here they become config keys
            super().__init__(cfg)

    @classmethod
    def config_names(cls) -> dict[str, str]:
        """What each field the library's errors can name is called in the config."""
        prefix = f"TRAINER.{cls.__name__.upper()}"  # the config node (config_node)
        names = {"clip_path": "MODEL.BACKBONE.PATH", "clip_name": "MODEL.BACKBONE.NAME",
                 "max_epoch": "OPTIM.MAX_EPOCH"}
        names.update({name: f"{prefix}.{key}" for name, key in cls.field_keys.items()})
        if cls.method_keys is not None:
            names.update(cls.method_keys.names())
        return names

    @property
    def config_node(self) -> str:
        """The node of this trainer's keys: its name in capitals, as in the ecosystem (cfg.TRAINER.COOP for CoOp)."""
        return type(self).__name__.upper()

    @property
    def trainer_cfg(self):
        return self.cfg.TRAINER[self.config_node]

    def check_cfg(self, cfg):
        """Before anything is loaded: the precision, and the hand-written templates of a trainer whose node
        has TEMPLATES (all of them, or the first only where its ENSEMBLE key is False)."""
        node = cfg.TRAINER[self.config_node]
        checked_precision(node.PREC, self.precisions, f"TRAINER.{self.config_node}.PREC")
        if "TEMPLATES" in node:
            self.choose_templates(cfg, ensemble=node.get("ENSEMBLE", True))

    # ---- data and random streams -----------------------------------------
    @property
    def seeded(self) -> bool:
        return self.cfg.SEED >= 0

    def build_data_loader(self):
        """Dassl's loaders, with per-image seeded augmentation; then the model's own seed."""
        dm = DataManager(self.cfg, dataset_wrapper=SeededAugmentation)
        self.train_loader_x, self.train_loader_u = dm.train_loader_x, dm.train_loader_u
        self.val_loader, self.test_loader = dm.val_loader, dm.test_loader
        self.num_classes, self.num_source_domains = dm.num_classes, dm.num_source_domains
        self.lab2cname, self.dm = dm.lab2cname, dm
        if self.seeded:
            self.train_loader_x.dataset.seed = self.cfg.SEED
            # build_model comes next: its initialisation no longer depends on whether
            # the few-shot sample was just drawn (consuming the streams) or read
            seed_all(derived_seed(self.cfg.SEED, "model"))

    def before_epoch(self):
        if self.seeded:
            seed_all(derived_seed(self.cfg.SEED, "epoch", self.epoch))
            self.train_loader_x.dataset.epoch = self.epoch

    # ---- precision -------------------------------------------------------
    @property
    def precision(self) -> str:
        return checked_precision(self.trainer_cfg.PREC, self.precisions, f"TRAINER.{self.config_node}.PREC")

    # amp's autocast dtype on CUDA (LLaMP: bf16)
    amp_dtype_on_cuda = torch.float16

    @property
    def dtypes(self) -> Precision:
        """Where each tensor lives and in which dtype (``trainers.precision``)."""
        return Precision(self.precision, self.device.type, self.amp_dtype_on_cuda)

    def autocast(self):
        return self.dtypes.autocast()

    def cast_frozen_parameters(self, module: torch.nn.Module) -> None:
        self.dtypes.cast_frozen(module)

    def make_grad_scaler(self):
        return torch.amp.GradScaler("cuda") if self.dtypes.grad_scaling else None

    def optimization_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, max_norm: float = 0.0,
                          scaler=None) -> None:
        """The anomaly check, then ``trainers.optim.optimizer_step``."""
        self.detect_anomaly(loss)
        optimizer_step(loss, optimizer, max_norm, scaler)

    # ---- hand-written prompts --------------------------------------------
    def choose_templates(self, cfg, ensemble: bool) -> TemplateChoice:
        """The dataset's prompts from TRAINER.<NAME>.TEMPLATES (chosen in check_cfg: a bad file fails
        before anything is loaded); kept as ``self.templates`` and described by :meth:`templates_line`."""
        key = f"TRAINER.{self.config_node}.TEMPLATES"
        self.templates = configured_templates(cfg.TRAINER[self.config_node].TEMPLATES, cfg.DATASET.NAME, key,
                                              ensemble=ensemble)
        return self.templates

    def templates_line(self) -> str:
        return describe_choice(self.templates, f"TRAINER.{self.config_node}.TEMPLATES")

    # ---- backbone --------------------------------------------------------
    def load_clip(self) -> LoadedCLIP:
        backbone = self.cfg.MODEL.BACKBONE
        clip = load_clip(backbone.NAME, backbone.PATH)
        loaded = clip.architecture()
        # what was loaded, not what the config names (a tiny or fine-tuned CLIP under NAME ViT-B/16)
        other = "" if loaded == backbone.NAME else f"; MODEL.BACKBONE.NAME says {backbone.NAME}"
        print(f"Loaded CLIP ({loaded}{other}) from {clip.source}")
        size = tuple(self.cfg.INPUT.SIZE)
        if size != (clip.image_size, clip.image_size):
            raise ConfigError(f"INPUT.SIZE {list(size)} does not match the CLIP image size "
                              f"{clip.image_size} of {clip.source}: set INPUT.SIZE "
                              f"[{clip.image_size}, {clip.image_size}]")
        return clip

    # ---- optimisation ----------------------------------------------------
    def build_scheduler(self, optimizer: torch.optim.Optimizer):
        return build_lr_scheduler(optimizer, self.cfg.OPTIM, batches_per_epoch=len(self.train_loader_x))

    def advance_lr_schedule(self) -> None:
        """Call after each optimiser step: steps the schedule after every iteration
        (OPTIM.LR_SCHEDULER llamp_cosine) or after an epoch's last batch (Dassl's convention)."""
        if steps_every_iteration(self.cfg.OPTIM) or (self.batch_idx + 1) == self.num_batches:
            self.update_lr()

    def init_writer(self, log_dir):
        if is_main_process():  # one tensorboard writer per run, not per rank
            super().init_writer(log_dir)

    # ---- checkpoints -----------------------------------------------------
    def checkpoint_state(self, name: str) -> dict[str, torch.Tensor]:
        """The tensors of model ``name`` that a checkpoint keeps: its trainable parameters."""
        model = self._models[name]
        return {k: p.detach().cpu() for k, p in model.named_parameters() if p.requires_grad}

    def restore_state(self, name: str, state: dict[str, torch.Tensor], path: str) -> None:
        model = self._models[name]
        expected = set(self.checkpoint_state(name))
        if set(state) != expected:
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ConfigError(f"checkpoint {path} does not fit model {name!r}: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]} (was it trained with another config?)")
        current = dict(model.named_parameters())
        wrong = [f"{k} {list(v.shape)} vs {list(current[k].shape)}" for k, v in state.items()
                 if v.shape != current[k].shape]
        if wrong:
            raise ConfigError(f"checkpoint {path} has tensors of other shapes than model {name!r} ("
                              f"{'; '.join(wrong[:3])}): was it trained with another CLIP, LLM or config?")
        not_fp32 = [f"{k} {v.dtype}" for k, v in state.items() if v.dtype != torch.float32]
        if not_fp32:  # trained tensors are saved in fp32 whatever the precision: this file is not ours, or damaged
            raise ConfigError(f"checkpoint {path} holds tensors that are not float32 ({'; '.join(not_fp32[:3])}): "
                              "it was not written by this trainer, or it is damaged")
        model.load_state_dict(state, strict=False)

    def optimizer_state(self, name: str) -> dict | None:
        optim = self._optims[name]
        return optim.state_dict() if optim is not None else None

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        for name in self.get_model_names():
            sched = self._scheds[name]
            state = {
                "state_dict": self.checkpoint_state(name),
                "epoch": epoch + 1,
                "optimizer": self.optimizer_state(name),
                "scheduler": sched.state_dict() if sched is not None else None,
                "val_result": None if val_result is None else float(val_result),
                "config": self.cfg.dump(),  # what is needed to rebuild the frozen parts
            }
            save_checkpoint(state, os.path.join(directory, name), model_name or epoch_file_name(epoch + 1))

    def resume_model_if_exist(self, directory):
        names = self.get_model_names()
        found = resume_checkpoints({name: os.path.join(directory, name) for name in names})  # falls back past damage
        if found is None:
            print("No checkpoint found, train from scratch")
            return 0
        print(f"Found checkpoint at {directory} (will resume training)")
        start_epoch = 0
        for name, (path, ckpt) in found.items():
            self.restore_state(name, ckpt["state_dict"], path)
            if self._optims[name] is not None and ckpt.get("optimizer") is not None:
                self._optims[name].load_state_dict(ckpt["optimizer"])
            if self._scheds[name] is not None and ckpt.get("scheduler") is not None:
                self._scheds[name].load_state_dict(ckpt["scheduler"])
            start_epoch = ckpt["epoch"]
        print(f"Resuming from epoch {start_epoch}")
        return start_epoch

    def load_model(self, directory, epoch=None):
        if not directory:
            print("load_model() skipped: no --model-dir given (fine for a model with nothing trained)")
            return
        for name in self.get_model_names():
            folder = os.path.join(directory, name)
            if epoch is not None:
                path = os.path.join(folder, epoch_file_name(epoch))
            elif os.path.isfile(os.path.join(folder, BEST_NAME)):
                path = os.path.join(folder, BEST_NAME)
            else:  # no best-val model saved (TEST.FINAL_MODEL last_step): take the latest
                path = latest_checkpoint(folder) or os.path.join(folder, BEST_NAME)
            ckpt = load_checkpoint(path)
            val = ckpt.get("val_result")
            print(f"Load {path} to {name} (epoch={ckpt['epoch']}"
                  + (f", val_result={val:.1f})" if val is not None else ")"))
            self.restore_state(name, ckpt["state_dict"], path)
