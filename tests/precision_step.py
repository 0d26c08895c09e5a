"""One LLaMP training step's losses and gradients, in its own process (DeepSpeed starts a process group).

    python tests/precision_step.py ROOT CLIP LLM OUT_DIR PREC DEEPSPEED RESULT.pt

Builds the trainer train.py builds (demo config, seed 1, 2 shots of the base classes), takes the first batch
of epoch 0 with query template 0, and saves the losses, each trained tensor's gradient (under DeepSpeed: the
full fp32 gradient ZeRO holds) and the dtypes the run placed each kind of tensor in. A DeepSpeed run needs the
launcher's variables (RANK, WORLD_SIZE, ...) in the environment.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]


def main(root, clip, llm, out_dir, prec, deepspeed, result):
    import torch

    import train  # noqa: F401  (Dassl's engine before the trainers)
    import trainers  # noqa: F401
    from train_cli import in_process_trainer

    trainer = in_process_trainer("LLaMP", root, out_dir, {"clip": clip, "llm": llm}, "TRAINER.LLAMP.PREC", prec,
                                 "TRAINER.LLAMP.DEEPSPEED", deepspeed)
    trainer.before_train()
    trainer.epoch = 0
    trainer.before_epoch()
    images, labels = trainer.parse_batch_train(next(iter(trainer.train_loader_x)))
    kv = trainer.kv_stager.get(0)
    with trainer.autocast():
        losses, _ = trainer.model.losses(images, labels, kv)
    loss = sum(losses.values())
    trained = [(name, p) for name, p in trainer.model.named_parameters() if p.requires_grad]
    frozen = [p for p in trainer.model.parameters() if not p.requires_grad]
    dtypes = {"trained": {str(p.dtype) for _, p in trained}, "frozen": {str(p.dtype) for p in frozen},
              "targets": str(trainer.model.targets.dtype), "kv": str(kv.keys[0].dtype)}
    if trainer.deepspeed is not None:
        from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_grad

        trainer.deepspeed.engine.backward(loss)
        grads = {name: safe_get_full_grad(p) for name, p in trained}
        dtypes["masters"] = {str(safe_get_full_fp32_param(p).dtype) for _, p in trained}
    else:
        loss.backward()
        grads = {name: p.grad for name, p in trained}
    torch.save({"losses": {k: v.item() for k, v in losses.items()},
                "grads": {k: g.detach().float().cpu() for k, g in grads.items()}, "dtypes": dtypes}, result)


if __name__ == "__main__":
    main(*sys.argv[1:])
