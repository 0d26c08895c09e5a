"""Train or evaluate a prompt-learning trainer through Dassl.

Same flags and semantics as the CoOp / MaPLe ``train.py``:

    python train.py --root DATA --trainer LLaMP \
        --dataset-config-file configs/datasets/oxford_pets.yaml \
        --config-file configs/trainers/LLaMP/base2new.yaml \
        --output-dir output/... [--seed 1] [--eval-only --model-dir DIR --load-epoch N] \
        DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base

A wrong input (unknown trainer or dataset, missing file, bad config key) is
reported as one ``error:`` line with exit status 2.
"""
import argparse
import os
import sys

from llamp.quiet import quiet_logs

# Before torch and Dassl are imported: their import-time warnings and, in a log file, progress bars.
quiet_logs()

import torch  # noqa: E402
from dassl.config import clean_cfg, get_cfg_default  # noqa: E402
from dassl.data.datasets import DATASET_REGISTRY  # noqa: E402
from dassl.engine import TRAINER_REGISTRY, build_trainer  # noqa: E402
from dassl.utils import collect_env_info, set_random_seed, setup_logger  # noqa: E402

import trainers  # noqa: E402,F401  (registers the trainers)
import vl_datasets  # noqa: E402,F401  (registers the datasets)
from llamp.atomic_files import unwritable_error  # noqa: E402
from llamp.errors import ConfigError, run_command  # noqa: E402
from trainers.base import ClipTrainer  # noqa: E402
from trainers.distributed import is_main_process  # noqa: E402
from trainers.reproducibility import use_deterministic_algorithms  # noqa: E402
from vl_datasets.config import merge_config_file  # noqa: E402


def print_args(args, cfg):
    print("***************\n** Arguments **\n***************")
    for key in sorted(vars(args)):
        print(f"{key}: {getattr(args, key)}")
    print("************\n** Config **\n************")
    print(cfg)


def reset_cfg(cfg, args):
    """Command-line flags override the config files (as in Dassl's train.py)."""
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed is not None and args.seed >= 0:
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head



def check_registered(kind, name, registry, source):
    names = sorted(registry.registered_names())
    if name not in names:
        raise ConfigError(f"unknown {kind} {name!r} ({source}); registered: {', '.join(names)}")


def check_trainer(name):
    """An unknown trainer names this toolbox's prompt-learning trainers first, then Dassl's stock ones."""
    names = sorted(TRAINER_REGISTRY.registered_names())
    if name in names:
        return
    ours = [n for n in names if issubclass(TRAINER_REGISTRY.get(n), ClipTrainer)]
    stock = [n for n in names if n not in ours]
    raise ConfigError(f"unknown trainer {name!r} (--trainer); prompt-learning trainers: {', '.join(ours)} "
                      f"(Dassl's own, not for CLIP: {', '.join(stock)})")


def setup_cfg(args):
    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    if args.dataset_config_file:
        merge_config_file(cfg, args.dataset_config_file, "--dataset-config-file")
    if args.config_file:
        merge_config_file(cfg, args.config_file, "--config-file")
    reset_cfg(cfg, args)
    try:
        cfg.merge_from_list(args.opts)
    except (KeyError, ValueError, AssertionError) as e:
        raise ConfigError(f"command-line config options: {e}") from None
    check_trainer(cfg.TRAINER.NAME)
    check_registered("dataset", cfg.DATASET.NAME, DATASET_REGISTRY,
                     "DATASET.NAME, set by --dataset-config-file")
    clean_cfg(cfg, cfg.TRAINER.NAME)
    cfg.freeze()
    return cfg


def main(args):
    cfg = setup_cfg(args)
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    if is_main_process():  # under a multi-process launcher, only rank 0 writes log.txt
        try:
            setup_logger(cfg.OUTPUT_DIR)
        except OSError as e:  # Dassl's log file, the run's first write: a full or read-only folder is one line
            error = unwritable_error(os.path.join(cfg.OUTPUT_DIR, "log.txt"), e)
            if error is None:
                raise
            raise error from None

    if cfg.TRAIN.DETERMINISTIC:
        use_deterministic_algorithms()
    elif torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
    if torch.cuda.is_available() and cfg.USE_CUDA:
        if "LOCAL_RANK" in os.environ:  # one device per process under deepspeed / torchrun
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))

    print_args(args, cfg)
    print("Collecting env info ...")
    print(f"** System info **\n{collect_env_info()}\n")

    trainer = build_trainer(cfg)

    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
        return

    if not args.no_train:
        trainer.train()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train or evaluate a Dassl prompt-learning trainer.")
    parser.add_argument("--root", type=str, default="", help="path to dataset")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="",
                        help="checkpoint directory (from which the training resumes)")
    parser.add_argument("--seed", type=int, default=-1, help="only positive value enables a fixed seed")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="path to config file")
    parser.add_argument("--dataset-config-file", type=str, default="",
                        help="path to config file for dataset setup")
    parser.add_argument("--trainer", type=str, default="", help="name of trainer")
    parser.add_argument("--backbone", type=str, default="", help="name of CNN backbone")
    parser.add_argument("--head", type=str, default="", help="name of head")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="",
                        help="load model from this directory for eval-only mode")
    parser.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help=argparse.SUPPRESS)  # passed by the deepspeed launcher; LOCAL_RANK is read instead
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="modify config options using the command-line")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run_command(lambda: main(parse_args())))
