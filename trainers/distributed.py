"""DeepSpeed and multi-process training: who runs it, how data is sharded, how a step is taken.

``deepspeed train.py ...`` (or torchrun) starts one process per device and sets
RANK / WORLD_SIZE / LOCAL_RANK. Every rank builds the same trainer and trains
on its own shard of the data; only rank 0 writes the log, evaluates and saves.

When is DeepSpeed used (``TRAINER.LLAMP.DEEPSPEED True``)?
  * CUDA present: always, with the JSON config (ZeRO-2, clipping);
  * no CUDA, started by a launcher (WORLD_SIZE set): on CPU with gloo, the same
    config (the path users run on GPUs, run here and in the tests);
  * no CUDA, plain ``python train.py``: not used; training runs in plain
    PyTorch on CPU, and a notice says so.
On either device bf16 is on exactly when TRAINER.LLAMP.PREC is bf16, whatever the
JSON says (PREC is the one place precision is chosen: ``trainers.precision``).
"""
from __future__ import annotations

import os
import socket

import torch
from torch.utils.data import DataLoader, DistributedSampler
from yacs.config import CfgNode

from llamp.atomic_files import write_folder_atomic
from llamp.errors import MissingFileError
from llamp.json_files import read_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def launched() -> bool:
    """Started by a distributed launcher (deepspeed, torchrun)?"""
    return "WORLD_SIZE" in os.environ


def deepspeed_device(cfg: CfgNode) -> str | None:
    """'cuda' or 'cpu' if this run trains with DeepSpeed, else None (see the module doc)."""
    node = cfg.TRAINER.get(cfg.TRAINER.NAME.upper())
    if node is None or not node.get("DEEPSPEED", False):
        return None
    if torch.cuda.is_available() and cfg.USE_CUDA:
        return "cuda"
    return "cpu" if launched() else None


def shard_train_loader(loader: DataLoader, cfg: CfgNode) -> DataLoader:
    """The training loader restricted to this rank's shard (unchanged for a single process)."""
    if deepspeed_device(cfg) is None or world_size() == 1:
        return loader
    sampler = DistributedSampler(loader.dataset, num_replicas=world_size(), rank=rank(), shuffle=True,
                                 seed=max(cfg.SEED, 0))
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                      num_workers=loader.num_workers, drop_last=loader.drop_last,
                      pin_memory=loader.pin_memory)


def _set_single_process_env() -> None:
    """DeepSpeed initialises torch.distributed from these; a plain `python train.py` has none."""
    if launched():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def read_deepspeed_config(path: str, cfg: CfgNode, bf16: bool) -> dict:
    """The JSON at ``path`` with the batch sizes and clipping of ``cfg``, and bf16 as ``bf16`` says."""
    full = path if os.path.isabs(path) else os.path.join(REPO, path)
    if not os.path.isfile(full):
        full = path
    if not os.path.isfile(full):
        raise MissingFileError(f"TRAINER.LLAMP.DEEPSPEED_CONFIG {path} does not exist")
    config = read_json(full, f"TRAINER.LLAMP.DEEPSPEED_CONFIG {full}").content
    # Batch sizes and clipping come from the yacs config, so there is one place to set them.
    micro = cfg.DATALOADER.TRAIN_X.BATCH_SIZE
    config.update(train_micro_batch_size_per_gpu=micro, gradient_accumulation_steps=1,
                  train_batch_size=micro * world_size(), gradient_clipping=float(cfg.TRAINER.LLAMP.GRAD_CLIP))
    config.setdefault("bf16", {})["enabled"] = bf16
    config.setdefault("fp16", {})["enabled"] = False  # never: LLM activations overflow it
    return config


def _move_contents(source: str, target: str) -> None:
    """Every entry of folder ``source`` into folder ``target`` (same file system), then ``source`` removed."""
    for name in os.listdir(source):
        os.replace(os.path.join(source, name), os.path.join(target, name))
    os.rmdir(source)


class DeepSpeedRunner:
    """A DeepSpeed engine around a model and its (client) optimiser; steps with backward_and_step."""

    def __init__(self, engine, device: str):
        self.engine = engine
        self.device = device

    @classmethod
    def maybe_create(cls, cfg: CfgNode, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     bf16: bool) -> "DeepSpeedRunner | None":
        node = cfg.TRAINER[cfg.TRAINER.NAME.upper()]
        device = deepspeed_device(cfg)
        if device is None:
            if node.get("DEEPSPEED", False):
                print("Note: TRAINER.LLAMP.DEEPSPEED is set but CUDA is not available: training with plain "
                      "PyTorch on CPU instead (start with the `deepspeed` launcher to use DeepSpeed on CPU)")
            return None
        import deepspeed

        _set_single_process_env()
        config = read_deepspeed_config(node.DEEPSPEED_CONFIG, cfg, bf16)
        print(f"DeepSpeed on {device} (rank {rank()} of {world_size()}): ZeRO stage "
              f"{config.get('zero_optimization', {}).get('stage', 0)}, "
              f"bf16 {config.get('bf16', {}).get('enabled', False)}")
        if device == "cpu":
            deepspeed.init_distributed(dist_backend="gloo")
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        return cls(engine, device)

    def backward_and_step(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)
        self.engine.step()  # clips gradients per the config, steps, zeroes gradients

    def save_state(self, folder: str, tag: str) -> None:
        """DeepSpeed's own checkpoint of the trained tensors, their fp32 masters and the optimiser
        partitions (each rank writes its own), under ``folder/tag``. Call on every rank.

        ``folder/tag`` appears whole or not at all: DeepSpeed writes into a folder of another name, which is
        renamed once every rank is done (a run killed halfway leaves the previous epoch's state intact)."""
        final = os.path.join(folder, tag)
        if world_size() == 1:
            write_folder_atomic(final, self._save_into)
            return
        partial = os.path.join(folder, f".{tag}.partial")  # the same name on every rank
        self._save_into(partial)
        torch.distributed.barrier()
        if is_main_process():
            write_folder_atomic(final, lambda tmp: _move_contents(partial, tmp))
        torch.distributed.barrier()

    def _save_into(self, path: str) -> None:
        self.engine.save_checkpoint(os.path.dirname(path), tag=os.path.basename(path), save_latest=False,
                                    exclude_frozen_parameters=True)

    def load_state(self, folder: str, tag: str) -> None:
        """Restore what ``save_state`` wrote (same number of processes), or say that it is missing."""
        if not os.path.isdir(os.path.join(folder, tag)):
            print(f"Note: no DeepSpeed state at {os.path.join(folder, tag)}: resuming with the checkpoint's "
                  "weights and schedule and a fresh optimiser state")
            return
        self.engine.load_checkpoint(folder, tag=tag, load_module_strict=False, load_optimizer_states=True,
                                    load_lr_scheduler_states=False)
        print(f"DeepSpeed: optimiser state and fp32 master weights restored from {os.path.join(folder, tag)}")

    def master_weights(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Each trained tensor's fp32 master (in bf16 the module holds rounded copies), on the CPU."""
        from deepspeed.utils import safe_get_full_fp32_param

        masters = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                master = safe_get_full_fp32_param(p)
                masters[name] = (p if master is None else master).detach().float().cpu()
        return masters

    def clamp_parameter_(self, param: torch.nn.Parameter, low: float, high: float) -> None:
        """Clamp ``param`` and DeepSpeed's fp32 master copy of it.

        ZeRO keeps its own fp32 copy of each trained tensor and writes it back
        over the module's after every step: clamping the module's tensor alone
        would be undone, and the copy would drift past the bound.
        """
        from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param

        master = safe_get_full_fp32_param(param)
        if master is not None:
            safe_set_full_fp32_param(param, master.clamp(low, high))
        with torch.no_grad():
            param.clamp_(low, high)
