"""Zero-shot CLIP: classify by cosine similarity to hand-written class prompts."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from dassl.engine import TRAINER_REGISTRY
from yacs.config import CfgNode as CN

from llamp.class_features import MEAN_OF_NORMALISED, template_class_features

from .base import ClipTrainer
from .config import config_defaults, trainer_node


@config_defaults
def add_zeroshot_clip_config(cfg: CN) -> None:
    cfg.TRAINER.ZEROSHOTCLIP = trainer_node()
    # The prompts: empty (None), our wording in llamp/templates/zero_shot.json; a list of templates
    # with one '{}' each; or a JSON file, a list or dataset names (and "default") mapped to lists.
    cfg.TRAINER.ZEROSHOTCLIP.TEMPLATES = None
    # False: the first of the dataset's TEMPLATES only; True: average over all of them.
    cfg.TRAINER.ZEROSHOTCLIP.ENSEMBLE = False


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(ClipTrainer):
    """Nothing is learned; ``train`` just evaluates."""

    def build_model(self):
        clip = self.load_clip()
        self.clip = clip.model.to(self.device, self.dtypes.frozen_dtype)
        print(f"Zero-shot prompts: {self.templates_line()}")

        def encode(texts: list[str]) -> torch.Tensor:
            with self.autocast():
                return clip.encode_text(texts)

        # [classes, embed]: CLIP's prompt ensembling
        self.text_features = template_class_features(encode, self.dm.dataset.classnames, self.templates.templates,
                                                     MEAN_OF_NORMALISED)

    @torch.no_grad()
    def model_inference(self, images):
        with self.autocast():
            image_features = self.clip.get_image_features(pixel_values=images.to(self.dtypes.frozen_dtype)).pooler_output
        image_features = F.normalize(image_features.float(), dim=-1)  # [batch, embed]
        return self.clip.logit_scale.exp().float() * image_features @ self.text_features.t()

    def train(self):
        print("ZeroshotCLIP has nothing to train: evaluating")
        self.test()
