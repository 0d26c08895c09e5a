"""The LLaMP model: LLM-decoded prompts in a deep-prompted CLIP, trained with the self-regulating loss.

Per class, M learned tokens are decoded by the LLM's last layers over that
class's knowledge cache (``llm_decoder``) and projected into CLIP's text width
for each of the first D text layers. The class prompt is laid out as in the
authors' release (github.com/zhaohengz/LLaMP, its "suffix" prompt type), in
``llamp.class_prompts``'s layout with M slots and no suffix, position ids
written out:

    token     <SOT>  ctx_1 .. ctx_4  name_1 .. name_n  llm_1 .. llm_M  <EOT>
    position    0    (carried)       5 .. 4+n          (none)          5+n

The 4 context vectors carry their own position embeddings (initialised as
token + position embedding of "a photo of a"); the LLM prompts have none; the
end-of-text token keeps the position it has in "a photo of a {c}". Features
are read at <EOT>. The vision tower gets learned prompt tokens and LoRA.
CLIP's own weights stay frozen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPTokenizer

from .cache_kv import CacheKV
from .class_prompts import ClassPrompts, class_prompt_layout
from .errors import ConfigError
from .llm.tail import DecoderTail
from .llm_decoder import LLMPromptDecoder
from .prompt_learner import PromptLearner, check_depth
from .prompted_clip import add_vision_lora
from .self_regulation import self_regulating_losses

INIT_LOGIT_SCALE = math.log(100.0)
# The release clamps the logit-scale parameter itself to [0, 4.605] (scale <= 99.98) before every forward.
MAX_LOGIT_SCALE = 4.605


@dataclass
class LLaMPConfig:
    """The method's hyper-parameters (the trainer's TRAINER.LLAMP keys are these fields in capitals; the
    decoder's train_q/o/kv are TRAIN_Q_PROJ, TRAIN_O_PROJ, TRAIN_KV_PROJ)."""

    num_llm_tokens: int = 16  # M: learned tokens decoded by the LLM, one CLIP prompt each
    prompt_depth: int = 9  # D: CLIP text layers that receive LLM prompts and deep context
    context_init: str = "a photo of a"  # the initial text of the learned context tokens
    num_visual_prompts: int = 4
    visual_prompt_depth: int = 6  # replaced at layers 1..depth-1
    lora_layers: tuple[int, ...] = (6, 7, 8, 9, 10, 11)  # vision layers with LoRA on q and v
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    train_q: bool = True  # the decoder copy: what is trained
    train_o: bool = True
    train_kv: bool = False
    train_mlp: bool = False
    train_layer_norms: bool = True  # the release trains them too
    train_final_norm: bool = True
    train_visual_projection: bool = False
    text_l1_weight: float = 25.0
    image_l1_weight: float = 10.0
    kl_weight: float = 2.5  # lambda: 2.5 base-to-novel, 1.0 few-shot
    # The authors' release injects LoRA into the tower its "frozen" teacher uses;
    # True reproduces that, False (default) keeps the teacher truly frozen.
    teacher_uses_lora: bool = False
    # False (the release's choice, for comparable numbers): at test time the per-template softmax is over
    # raw cosine similarities, without the logit scale.
    inference_logit_scale: bool = False


def clamp_parameter_(param: nn.Parameter, low: float, high: float) -> None:
    with torch.no_grad():
        param.clamp_(low, high)


def _kaiming(*shape: int) -> nn.Parameter:
    """Kaiming-uniform (a = sqrt 5) over the whole tensor: fan-in ``shape[1] * prod(shape[2:])``."""
    p = nn.Parameter(torch.empty(*shape))
    if p.numel():  # e.g. no visual prompts when VISUAL_PROMPT_DEPTH is 0
        nn.init.kaiming_uniform_(p, a=math.sqrt(5))
    return p


def _kaiming_per_layer(layers: int, tokens: int, width: int) -> nn.Parameter:
    """``[layers, tokens, width]``, each layer initialised on its own (fan-in ``width``), as the release does."""
    p = nn.Parameter(torch.empty(layers, tokens, width))
    for layer in p.data:
        nn.init.kaiming_uniform_(layer, a=math.sqrt(5))
    return p


class LLaMPModel(PromptLearner):
    """The LLaMP model (the module doc): ``losses`` for a training step, ``template_text_features`` and
    ``class_probabilities`` for the template ensemble at inference.

    ``targets``: the distillation text targets of ``classnames`` ``[C, embed]`` (the knowledge cache's),
    kept normalised as a buffer (it follows the model's device, and stays out of checkpoints).
    """

    def __init__(self, clip: CLIPModel, tokenizer: CLIPTokenizer, tail: DecoderTail,
                 classnames: list[str], config: LLaMPConfig, targets: torch.Tensor):
        super().__init__(clip)
        self.config = config
        self.embed_dim = clip.config.projection_dim
        vision_layers = len(self.vision_encoder.layers)
        check_depth(config.prompt_depth, len(self.text_encoder.layers), "prompt_depth")
        check_depth(config.visual_prompt_depth, vision_layers, "visual_prompt_depth", minimum=0)
        if any(not 0 <= i < vision_layers for i in config.lora_layers):
            raise ConfigError(f"{{lora_layers}} {list(config.lora_layers)} must lie in "
                              f"0..{vision_layers - 1}", fields=("lora_layers",))
        width, llm_hidden = self.text_encoder.width, tail.config.hidden_size
        depth, m = config.prompt_depth, config.num_llm_tokens

        self.decoder = LLMPromptDecoder(tail, m, train_q=config.train_q, train_o=config.train_o,
                                        train_kv=config.train_kv, train_mlp=config.train_mlp,
                                        train_layer_norms=config.train_layer_norms,
                                        train_final_norm=config.train_final_norm)
        # One projection LLM hidden -> CLIP text width per prompted layer, plus a per-token bias.
        self.projections = nn.ModuleList(nn.Linear(llm_hidden, width, bias=False) for _ in range(depth))
        self.projection_bias = _kaiming_per_layer(depth, m, width)

        self.prompts = ClassPrompts(class_prompt_layout(tokenizer, classnames, config.context_init, suffix="",
                                                        slots=m, trim=True, fields=("num_llm_tokens",)))
        context_ids = self.prompts.context_ids
        self.num_context = len(context_ids)
        with torch.no_grad():  # token + position embeddings of the init words at positions 1..n_ctx
            embeddings = self.text_encoder.embeddings
            init = (embeddings.token_embedding(torch.tensor(context_ids))
                    + embeddings.position_embedding(torch.arange(1, 1 + self.num_context)))
        self.context = nn.Parameter(init.clone())  # [n_ctx, width], positions included
        self.deep_context = _kaiming_per_layer(depth - 1, self.num_context, width)

        vision_width = self.vision_encoder.width
        self.visual_prompts = _kaiming(config.visual_prompt_depth, config.num_visual_prompts, vision_width)
        if config.lora_layers:
            add_vision_lora(clip, config.lora_layers, config.lora_rank, config.lora_alpha, config.lora_dropout)
        clip.visual_projection.requires_grad_(config.train_visual_projection)
        # shape [1], not a 0-d scalar: DeepSpeed broadcasts parameters as byte views
        self.logit_scale = nn.Parameter(torch.tensor([INIT_LOGIT_SCALE]))
        if targets.shape != (len(classnames), self.embed_dim):
            raise ValueError(f"targets must be [{len(classnames)}, {self.embed_dim}], got {list(targets.shape)}")
        self.register_buffer("targets", F.normalize(targets.float(), dim=-1), persistent=False)
        # How a bounded parameter is clamped in place; under ZeRO its fp32 master copy must be clamped too
        # (the DeepSpeed runner's clamp_parameter_ does both).
        self.clamp_parameter = clamp_parameter_

    # ---- features --------------------------------------------------------
    def text_features(self, kv: CacheKV) -> torch.Tensor:
        """LLaMP text features ``[C, embed]`` from one template's cache rows ``kv`` for the model's C classes."""
        decoded = self.decoder(kv)  # [C, M, llm_hidden]
        dtype = self.projection_bias.dtype
        prompts = [proj(decoded.to(dtype)) + self.projection_bias[d] for d, proj in enumerate(self.projections)]
        # layer 0 included: the context carries its own positions, so it and the LLM prompts replace their
        # tokens after the position embeddings are added
        embeds = self.prompts.token_embeddings(self.text_encoder.token_embedding)  # [C, seq, width]
        return self.encode_prompts(embeds, self.prompts.injections([self.context, *self.deep_context],
                                                                   first_layer=0, slots=prompts))

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Tuned image features ``[batch, embed]`` (visual prompts and LoRA)."""
        return self.vision_encoder(images, list(self.visual_prompts))

    @torch.no_grad()
    def teacher_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen-CLIP image features: no visual prompts, and no LoRA unless ``teacher_uses_lora``."""
        if self.config.teacher_uses_lora:
            return self.vision_encoder(images)
        return self.frozen_image_features(images)

    def scale(self) -> torch.Tensor:
        """exp of the logit-scale parameter, after clamping the parameter itself to [0, MAX_LOGIT_SCALE].

        Clamping the stored value (not just the value used) keeps the parameter
        where its gradient is alive: a parameter left above the ceiling would
        get zero gradient there and never come back.
        """
        self.clamp_parameter(self.logit_scale, 0.0, MAX_LOGIT_SCALE)
        return self.logit_scale.exp()

    # ---- training --------------------------------------------------------
    def losses(self, images: torch.Tensor, labels: torch.Tensor,
               kv: CacheKV) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The four loss terms (already weighted) and the logits ``[batch, C]``; ``kv``: one template's cache
        rows for the model's classes."""
        scale = self.scale().float()  # clamps the parameter first, as the release does before each forward
        c = self.config
        return self_regulating_losses(self.text_features(kv), self.image_features(images),
                                      self.teacher_image_features(images), self.targets, labels,
                                      scale, c.text_l1_weight, c.image_l1_weight, c.kl_weight)

    # ---- inference: the template ensemble ----------------------------------
    @torch.no_grad()
    def template_text_features(self, caches: Iterable[CacheKV]) -> torch.Tensor:
        """Normalised text features of every query template ``[T, C, embed]``.

        ``caches``: per template, its cache rows for the model's classes (read one at a
        time, so a caller may load the next while one computes).
        """
        return torch.stack([F.normalize(self.text_features(kv).float(), dim=-1) for kv in caches])

    def class_probabilities(self, images: torch.Tensor, text_per_template: torch.Tensor) -> torch.Tensor:
        """Mean over templates of softmax over classes ``[batch, C]``: the template ensemble.

        ``text_per_template``: normalised text features ``[T, C, embed]`` (:meth:`template_text_features`).
        The softmax is over raw cosines unless ``inference_logit_scale`` (the release's choice).
        """
        image = F.normalize(self.image_features(images).float(), dim=-1)  # [batch, embed]
        logits = torch.einsum("be,tce->tbc", image, text_per_template.float())
        if self.config.inference_logit_scale:
            logits = logits * self.scale().float()
        return logits.softmax(dim=-1).mean(dim=0)
