"""PromptSRC — Self-regulating Prompts (Khattak et al., ICCV 2023).

What is learned (independent vision-language prompting, "IVLP"):
  * text: ``ctx`` ``[n_ctx_text, text_width]``, the first words of
    "a photo of a {class}." (initialised from their embeddings), and
    ``deep_text`` ``[depth_text - 1, n_ctx_text, text_width]`` replacing those
    positions before text layers ``1 .. depth_text - 1``;
  * vision: ``visual_prompts`` ``[depth_vision, n_ctx_vision, vision_width]``,
    appended after the patch tokens and replaced before vision layers
    ``1 .. depth_vision - 1``. Unlike MaPLe, nothing ties the two towers.

Self-regulation keeps the prompted model close to frozen CLIP (which is the
same towers called without prompts, so it never drifts):
  * ``text_l1``: L1 between the normalised prompted class features and frozen
    CLIP's class features averaged over several hand-written templates
    (textual diversity: mean of the raw features over templates, normalised);
  * ``image_l1``: L1 between normalised prompted and frozen image features;
  * ``kl``: KL(frozen logits || prompted logits) per element, the frozen logits
    being frozen image features against the template-averaged text features.
This is the same objective as LLaMP's (which took these terms from PromptSRC):
``llamp.self_regulation`` computes it for both. Weights per the paper: text 25,
image 10, logits 1.

Gaussian prompt aggregation (GPA): the prompts at the end of epoch ``e``
(1-based) get weight ``N(e; mean, std)``, normalised over the epochs 1..E; the
model used for the final checkpoint and evaluation holds the weighted sum.
``GaussianPromptAggregation`` keeps that running sum; the trainer feeds it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import CLIPModel, CLIPTokenizer

from ..class_features import MEAN_OF_RAW, template_class_features
from ..class_prompts import PROMPT_INIT_STD, sentence_context
from ..clip.loading import clip_text_features
from ..errors import ConfigError
from ..prompt_learner import CLIPScoredPromptLearner, check_depth
from ..self_regulation import self_regulating_losses


@dataclass
class PromptSRCConfig:
    """PromptSRC's hyper-parameters (the trainer's TRAINER.PROMPTSRC keys are these fields in capitals: the
    release's key names, and its types, integer weights included, so that its YAML files merge unchanged)."""

    n_ctx_text: int = 4
    n_ctx_vision: int = 4
    # its first n_ctx_text tokens initialise the text context; "" (or n_ctx_text > 4): random "X X X X"
    ctx_init: str = "a photo of a"
    prompt_depth_text: int = 9  # text layers with prompts (>= 1)
    prompt_depth_vision: int = 9  # vision layers with prompts (0 = none)
    text_loss_weight: float = 25  # L1 to frozen CLIP's template-averaged text features
    image_loss_weight: float = 10  # L1 to frozen CLIP's image features
    kl_loss_weight: float = 1.0  # KL(frozen logits || prompted logits); 1 in the paper (no key in the release)


class PromptSRCPromptLearner(CLIPScoredPromptLearner):
    """Frozen CLIP with independent deep text and vision prompts, regulated by frozen CLIP itself."""

    def __init__(self, clip: CLIPModel, tokenizer: CLIPTokenizer, classnames: list[str], templates: list[str],
                 config: PromptSRCConfig):
        if not templates:
            raise ConfigError("PromptSRC needs at least one hand-written template for its text targets")
        super().__init__(clip)
        self.config = config
        check_depth(config.prompt_depth_text, len(self.text_encoder.layers), "prompt_depth_text")
        if config.prompt_depth_vision != 0:  # 0: no vision prompts
            check_depth(config.prompt_depth_vision, len(self.vision_encoder.layers), "prompt_depth_vision")
            if config.n_ctx_vision < 1:
                raise ConfigError(f"{{n_ctx_vision}} must be >= 1, got {config.n_ctx_vision}",
                                  fields=("n_ctx_vision",))
        text_width, vision_width = self.text_encoder.width, self.vision_encoder.width

        self.prompts, context_init = sentence_context(
            self.text_encoder, tokenizer, classnames, config.n_ctx_text, config.ctx_init, n_ctx_field="n_ctx_text")
        self.ctx = nn.Parameter(context_init)  # [n_ctx_text, text_width]
        self.deep_text = nn.Parameter(torch.empty(config.prompt_depth_text - 1, config.n_ctx_text, text_width)
                                      .normal_(std=PROMPT_INIT_STD))
        self.visual_prompts = nn.Parameter(torch.empty(config.prompt_depth_vision, config.n_ctx_vision, vision_width)
                                           .normal_(std=PROMPT_INIT_STD))

        self.templates = list(templates)
        # [C, embed], normalised: computed once, before any precision cast
        self.register_buffer("frozen_text_features", frozen_text_features(clip, tokenizer, classnames, templates),
                             persistent=False)

    # ---- features --------------------------------------------------------
    def text_features(self) -> torch.Tensor:
        """Prompted class features ``[C, embed]`` (not normalised)."""
        embeds = self.prompts.token_embeddings(self.text_encoder.token_embedding, self.ctx)
        return self.encode_prompts(embeds, self.prompts.injections(list(self.deep_text), first_layer=1))

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Prompted image features ``[batch, embed]`` (not normalised)."""
        return self.vision_encoder(images, list(self.visual_prompts))

    # ---- training ----------------------------------------------------------
    def losses(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``ce``, ``text_l1``, ``image_l1`` and ``kl`` (weighted), and the prompted logits ``[batch, C]``."""
        c = self.config
        return self_regulating_losses(self.text_features(), self.image_features(images),
                                      self.frozen_image_features(images), self.frozen_text_features, labels,
                                      self.logit_scale, c.text_loss_weight, c.image_loss_weight, c.kl_loss_weight)


def frozen_text_features(clip: CLIPModel, tokenizer: CLIPTokenizer, classnames: list[str],
                         templates: list[str]) -> torch.Tensor:
    """Frozen CLIP's class features ``[C, embed]``: raw features averaged over templates, then normalised."""
    def encode(texts: list[str]) -> torch.Tensor:
        return clip_text_features(clip, tokenizer, texts, batch_size=None)  # every class in one batch

    return template_class_features(encode, classnames, templates, MEAN_OF_RAW)


# ---- Gaussian prompt aggregation ------------------------------------------
def gpa_weights(mean: float, std: float, epochs: int) -> list[float]:
    """Weight of epoch ``e`` = 1..``epochs``: the Gaussian density N(e; mean, std), normalised to sum to 1."""
    if not std > 0:
        raise ConfigError(f"{{gpa_std}} must be > 0, got {std}", fields=("gpa_std",))
    if epochs < 1:
        raise ConfigError(f"{{max_epoch}} must be >= 1 for prompt aggregation, got {epochs}", fields=("max_epoch",))
    exponents = [-0.5 * ((e - mean) / std) ** 2 for e in range(1, epochs + 1)]
    top = max(exponents)  # shift before exp so that far-off means do not underflow to all zeros
    raw = [math.exp(x - top) for x in exponents]
    return [r / sum(raw) for r in raw]


class GaussianPromptAggregation:
    """Running Gaussian-weighted sum of per-epoch prompt tensors.

    ``add(epoch, tensors)`` after each epoch (0-based, as Dassl counts);
    ``aggregate()`` gives the weighted mean over the epochs added so far (the
    weights renormalised over them: all epochs added gives the paper's GPA).
    """

    def __init__(self, weights: list[float]):
        self.weights = list(weights)
        self.sums: dict[str, torch.Tensor] = {}
        self.epochs: list[int] = []

    @classmethod
    def from_config(cls, mean: float, std: float, epochs: int) -> "GaussianPromptAggregation":
        return cls(gpa_weights(mean, std, epochs))

    @property
    def complete(self) -> bool:
        return sorted(self.epochs) == list(range(len(self.weights)))

    def add(self, epoch: int, tensors: dict[str, torch.Tensor]) -> None:
        if not 0 <= epoch < len(self.weights):
            raise ValueError(f"epoch {epoch} outside the {len(self.weights)} aggregated epochs")
        if epoch in self.epochs:
            raise ValueError(f"epoch {epoch} was already aggregated")
        w = self.weights[epoch]
        for name, t in tensors.items():
            term = w * t.detach().float()
            self.sums[name] = term if name not in self.sums else self.sums[name] + term
        self.epochs.append(epoch)

    def aggregate(self) -> dict[str, torch.Tensor]:
        if not self.epochs:
            raise ValueError("no epoch aggregated yet")
        total = sum(self.weights[e] for e in self.epochs)
        return {name: s / total for name, s in self.sums.items()}

    # ---- for resuming a run ------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"epochs": torch.tensor(self.epochs, dtype=torch.long),
                **{f"sum.{name}": s.cpu() for name, s in self.sums.items()}}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.epochs = [int(e) for e in state["epochs"]]
        self.sums = {k[len("sum."):]: v for k, v in state.items() if k.startswith("sum.")}
