"""Zero-shot CLIP: classify by cosine similarity to hand-written class prompts."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from dassl.engine import TRAINER_REGISTRY
from yacs.config import CfgNode as CN

from llamp.templates import class_prompt_name

from .base import ClipTrainer
from .config import config_defaults


@config_defaults
def add_zeroshot_clip_config(cfg: CN) -> None:
    cfg.TRAINER.ZEROSHOTCLIP = CN()
    cfg.TRAINER.ZEROSHOTCLIP.PREC = "fp32"  # fp32 | fp16 | bf16 | amp
    # The prompts: empty (None), our wording in llamp/templates/zero_shot.json; a list of templates
    # with one '{}' each; or a JSON file, a list or dataset names (and "default") mapped to lists.
    cfg.TRAINER.ZEROSHOTCLIP.TEMPLATES = None
    # False: the first of the dataset's TEMPLATES only; True: average over all of them.
    cfg.TRAINER.ZEROSHOTCLIP.ENSEMBLE = False


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(ClipTrainer):
    """Nothing is learned; ``train`` just evaluates."""

    config_node = "ZEROSHOTCLIP"

    def check_cfg(self, cfg):
        self.choose_templates(cfg, ensemble=cfg.TRAINER.ZEROSHOTCLIP.ENSEMBLE)

    def build_model(self):
        clip = self.load_clip()
        self.clip = clip.model.to(self.device, self.weight_dtype)
        templates = self.templates.templates
        names = [class_prompt_name(c) for c in self.dm.dataset.classnames]
        print(f"Zero-shot prompts: {self.templates_line()}")
        with self.autocast():
            per_template = [F.normalize(clip.encode_text([t.format(c) for c in names]).float(), dim=-1)
                            for t in templates]
        # [classes, embed]: mean of normalised features over templates, renormalised
        self.text_features = F.normalize(torch.stack(per_template).mean(0), dim=-1)

    @torch.no_grad()
    def model_inference(self, images):
        with self.autocast():
            image_features = self.clip.get_image_features(pixel_values=images.to(self.weight_dtype)).pooler_output
        image_features = F.normalize(image_features.float(), dim=-1)  # [batch, embed]
        return self.clip.logit_scale.exp().float() * image_features @ self.text_features.t()

    def train(self):
        print("ZeroshotCLIP has nothing to train: evaluating")
        self.test()
