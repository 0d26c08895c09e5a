"""CoOp (Zhou et al., IJCV 2022): context words learned in CLIP's token-embedding space.

The prompt of class ``c`` is a token sequence

    end:     <BOS> ctx_1 .. ctx_n  name(c) . <EOS>
    middle:  <BOS> ctx_1 .. ctx_n/2  name(c)  ctx_n/2+1 .. ctx_n . <EOS>
    front:   <BOS> name(c)  ctx_1 .. ctx_n . <EOS>

where the n context vectors are learned, either one set shared by every class
(unified) or one set per class (class-specific context, CSC), and initialised
at random or from the embedding of given words ("a photo of a"). CLIP stays
frozen: the prompts go through its text tower (``PromptedTextEncoder``), the
features are read at EOS, and images are classified by cosine similarity
times CLIP's logit scale.

``ContextPrompts`` (the learned context and each class's token layout) and
``CoOp`` are reused by CoCoOp and KgCoOp, which hold only what they add.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPTokenizer

from ..clip_tokenizer import CONTEXT_LENGTH
from ..errors import ConfigError
from ..prompted_clip import PromptedTextEncoder, PromptedVisionEncoder, replace_positions
from ..templates import class_prompt_name

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
PLACEHOLDER = "X"  # marks a random-initialised context slot in input_ids; its embedding is always replaced


@dataclass
class CoOpConfig:
    """How the context is learned (the trainers fill this from cfg.TRAINER.<METHOD>)."""

    n_ctx: int = 16  # context length; ignored when ctx_init is given (its token count is used)
    ctx_init: str = ""  # words whose embeddings initialise the context; empty: N(0, init_std^2)
    class_specific: bool = False  # CSC: one context per class
    class_token_position: str = "end"  # end | middle | front
    init_std: float = 0.02
    key_prefix: str = "TRAINER.COOP"  # where these values come from, for error messages


class ContextPrompts(nn.Module):
    """The learned context vectors and where they and each class name sit in the prompts.

    Buffers (one row per class): ``input_ids [C, 77]`` (context slots hold the
    init words or a placeholder), ``context_positions [C, n]`` and
    ``eos_positions [C]``; ``name_positions[c]`` lists the class-name tokens.
    ``text_encoder`` is only read here (the init words' embeddings, the width), not kept.
    """

    def __init__(self, tokenizer: CLIPTokenizer, classnames: list[str], config: CoOpConfig,
                 text_encoder: PromptedTextEncoder):
        super().__init__()
        key = config.key_prefix
        if config.class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ConfigError(f"{key}.CLASS_TOKEN_POSITION must be one of {CLASS_TOKEN_POSITIONS}, "
                              f"got {config.class_token_position!r}")
        init_ids = tokenizer(config.ctx_init, add_special_tokens=False).input_ids if config.ctx_init.strip() else []
        if not init_ids and config.n_ctx < 1:
            raise ConfigError(f"{key}.N_CTX must be at least 1 (or give {key}.CTX_INIT), got {config.n_ctx}")
        self.n_ctx = len(init_ids) or config.n_ctx
        self.class_specific = config.class_specific
        self.class_token_position = config.class_token_position
        self.classnames = list(classnames)
        n_cls = len(classnames)

        if init_ids:
            with torch.no_grad():
                weight = text_encoder.embeddings.token_embedding.weight
                init = text_encoder.token_embedding(torch.tensor(init_ids, device=weight.device))
                init = init.detach().float().cpu().clone()  # [n, width]
            if self.class_specific:
                init = init.unsqueeze(0).repeat(n_cls, 1, 1)  # every class starts from the same words
            slot_ids = init_ids
        else:
            width = text_encoder.width
            shape = (n_cls, self.n_ctx, width) if self.class_specific else (self.n_ctx, width)
            init = torch.empty(*shape).normal_(std=config.init_std)
            slot_ids = tokenizer(PLACEHOLDER, add_special_tokens=False).input_ids * self.n_ctx
        self.context = nn.Parameter(init)  # [n, width] unified, [C, n, width] class-specific

        self._set_layout(tokenizer, slot_ids, config)

    def _set_layout(self, tokenizer: CLIPTokenizer, slot_ids: list[int], config: CoOpConfig) -> None:
        """Token ids and positions of "<BOS> {context and name, in the chosen order} . <EOS>" per class."""
        period = tokenizer(".", add_special_tokens=False).input_ids
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        n, half = self.n_ctx, self.n_ctx // 2
        rows, ctx_pos, name_pos, eos_pos, too_long = [], [], [], [], []
        for c in self.classnames:
            name = tokenizer(class_prompt_name(c), add_special_tokens=False).input_ids
            if self.class_token_position == "end":
                body, ctx_at, name_at = slot_ids + name, list(range(n)), list(range(n, n + len(name)))
            elif self.class_token_position == "front":
                body, ctx_at, name_at = name + slot_ids, list(range(len(name), len(name) + n)), list(range(len(name)))
            else:  # middle: the first half of the context, the name, the second half
                body = slot_ids[:half] + name + slot_ids[half:]
                ctx_at = list(range(half)) + list(range(half + len(name), n + len(name)))
                name_at = list(range(half, half + len(name)))
            ids = [tokenizer.bos_token_id] + body + period + [tokenizer.eos_token_id]
            if len(ids) > CONTEXT_LENGTH:
                too_long.append(c)
                continue
            rows.append(ids + [pad] * (CONTEXT_LENGTH - len(ids)))
            ctx_pos.append([1 + i for i in ctx_at])  # + 1: after <BOS>
            name_pos.append([1 + i for i in name_at])
            eos_pos.append(len(ids) - 1)
        if too_long:
            raise ConfigError(f"class names too long for CLIP's {CONTEXT_LENGTH} tokens with {n} context tokens "
                              f"({config.key_prefix}.N_CTX / CTX_INIT): {too_long[:3]}")
        self.name_positions = name_pos
        self.register_buffer("input_ids", torch.tensor(rows), persistent=False)  # [C, 77]
        self.register_buffer("context_positions", torch.tensor(ctx_pos), persistent=False)  # [C, n]
        self.register_buffer("eos_positions", torch.tensor(eos_pos), persistent=False)  # [C]

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def class_context(self, shift: torch.Tensor | None = None) -> torch.Tensor:
        """Each class's context ``[C, n, width]``, plus ``shift`` (``[width]`` or ``[n, width]``) if given."""
        context = self.context
        if context.dim() == 2:  # unified: the same context for every class
            context = context.unsqueeze(0).expand(self.num_classes, -1, -1)
        return context if shift is None else context + shift

    def token_embeddings(self, embed_tokens: Callable[[torch.Tensor], torch.Tensor],
                         context: torch.Tensor) -> torch.Tensor:
        """Layer-0 inputs ``[C, 77, width]``: frozen token embeddings, ``context [C, n, width]`` in its slots."""
        embeds = embed_tokens(self.input_ids)  # [C, 77, width]
        return replace_positions(embeds, self.context_positions, context)


class CoOp(nn.Module):
    """Frozen CLIP classifying with learned-context class prompts.

    ``forward(images) -> logits [B, C]``; ``losses(images, labels) -> ({"ce": loss}, logits)``.
    """

    def __init__(self, clip: CLIPModel, tokenizer: CLIPTokenizer, classnames: list[str], config: CoOpConfig):
        super().__init__()
        self.config = config
        clip.requires_grad_(False)
        self.text_encoder = PromptedTextEncoder(clip)
        self.vision_encoder = PromptedVisionEncoder(clip)  # no prompts: CLIP's own image features
        self.prompts = ContextPrompts(tokenizer, classnames, config, self.text_encoder)
        # exp of CLIP's (frozen) logit scale; a float buffer, so half precision never rounds it
        self.register_buffer("logit_scale", clip.logit_scale.detach().float().exp().reshape(()), persistent=False)

    @property
    def classnames(self) -> list[str]:
        return self.prompts.classnames

    def text_features(self, context: torch.Tensor | None = None) -> torch.Tensor:
        """Projected text features ``[C, embed]`` of the class prompts with ``context [C, n, width]``
        in the context slots (default: the learned context)."""
        if context is None:
            context = self.prompts.class_context()
        embeds = self.prompts.token_embeddings(self.text_encoder.token_embedding, context)
        return self.text_encoder(embeds, self.prompts.eos_positions)

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen CLIP image features ``[B, embed]`` (not normalised)."""
        return self.vision_encoder(images)

    def logits(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``scale * cos`` ``[B, C]``: normalised ``image [B, e]`` against normalised ``text [C, e]``
        (or ``[B, C, e]``: each image against its own text features)."""
        if text.dim() == 3:
            return self.logit_scale * torch.einsum("be,bce->bc", image, text)
        return self.logit_scale * image @ text.t()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image = F.normalize(self.image_features(images).float(), dim=-1)  # [B, embed]
        text = F.normalize(self.text_features().float(), dim=-1)  # [C, embed]
        return self.logits(image, text)

    def losses(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        logits = self(images)
        return {"ce": F.cross_entropy(logits, labels)}, logits
