"""CoOp (Zhou et al., IJCV 2022): context words learned in CLIP's token-embedding space.

The prompt of class ``c`` is a token sequence

    end:     <BOS> ctx_1 .. ctx_n  name(c) . <EOS>
    middle:  <BOS> ctx_1 .. ctx_n/2  name(c)  ctx_n/2+1 .. ctx_n . <EOS>
    front:   <BOS> name(c)  ctx_1 .. ctx_n . <EOS>

where the n context vectors are learned, either one set shared by every class
(unified) or one set per class (class-specific context, CSC, started at
random), and initialised at random or from the embedding of given words ("a
photo of a"; read as the releases read them, ``init_context``). CLIP stays
frozen: the prompts go through its text tower (``PromptedTextEncoder``), the
features are read at EOS, and images are classified by cosine similarity
times CLIP's logit scale.

The token layout is ``llamp.class_prompts``'s. ``ContextPrompts`` (the learned
context in that layout) and ``CoOp`` are reused by CoCoOp and KgCoOp, which
extend CoOp and hold only what they add.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import CLIPModel, CLIPTokenizer

from ..class_prompts import (NAME_POSITIONS, ClassPrompts, class_prompt_layout, context_from_words,
                             placeholder_context)
from ..errors import ConfigError
from ..prompt_learner import CLIPScoredPromptLearner
from ..prompted_clip import PromptedTextEncoder


@dataclass
class CoOpConfig:
    """How the context is learned: CoOp's, CoCoOp's and KgCoOp's settings (their trainers' TRAINER.<NAME>
    keys are these fields in capitals, ``class_specific`` as CSC)."""

    n_ctx: int = 16  # number of learned context tokens; ignored when ctx_init is given (its word count wins)
    # Words whose first tokens' embeddings initialise the context, e.g. "a photo of a" ("_" is a space, as in
    # the releases); empty: N(0, init_std^2)
    ctx_init: str = ""
    class_specific: bool = False  # one context per class, random init (cannot be used for other classes)
    class_token_position: str = "end"  # where the class name goes: end | middle | front
    init_std: float = 0.02  # the releases' init of a context not taken from words


def init_context(tokenizer: CLIPTokenizer, config: CoOpConfig) -> tuple[str, list[int]]:
    """CTX_INIT read as the releases read it: the prompt's prefix words and the ids of the learned tokens.

    "_" is a space, and the context learns as many vectors as the init has words,
    starting from the embeddings of its first that-many tokens; a word of several
    tokens leaves its last tokens after the learned ones as fixed text. Where the
    releases would silently compute something else, the setting is refused.
    """
    words = config.ctx_init.replace("_", " ")
    ids = tokenizer(words, add_special_tokens=False).input_ids
    n_words = len(words.split(" "))
    if config.class_specific:  # the releases (CoOp, KgCoOp) ignore CSC here and learn one shared context
        raise ConfigError(f"{{class_specific}} True with {{ctx_init}} {config.ctx_init!r}: set {{class_specific}} "
                          f"False for one shared context initialised from the words (the releases' computation), "
                          "or {ctx_init} '' for class-specific contexts (random init)",
                          fields=("class_specific", "ctx_init"))
    if n_words > len(ids):  # the releases would also cut the class name's first tokens from the prompt
        raise ConfigError(f"{{ctx_init}} {config.ctx_init!r} has {n_words} words (split at single spaces) but "
                          f"{len(ids)} tokens, so the releases would learn from the end token's embedding: "
                          "separate its words by single spaces, none leading or trailing", fields=("ctx_init",))
    if n_words < len(ids) and config.class_token_position != "end":
        raise ConfigError(f"{{ctx_init}} {config.ctx_init!r} is {len(ids)} tokens for {n_words} words: with "
                          f"{{class_token_position}} {config.class_token_position} the releases would read its "
                          f"last {len(ids) - n_words} token(s) as the class name; use words of one token each, "
                          "or {class_token_position} end (the extra tokens then stay as fixed text)",
                          fields=("ctx_init", "class_token_position"))
    return words, ids[:n_words]


class ContextPrompts(ClassPrompts):
    """The class prompts "<SOT> {context and name, in the chosen order} . <EOT>" and their learned context.

    The layout's buffers (one row per class, ``llamp.class_prompts``): ``input_ids
    [C, 77]`` (context positions hold the init words or a placeholder),
    ``context_positions [C, n]``, ``eos_positions [C]``; ``name_positions[c]`` lists
    the class-name tokens. ``text_encoder`` is only read here (the init words'
    embeddings, the width), not kept.
    """

    def __init__(self, tokenizer: CLIPTokenizer, classnames: list[str], config: CoOpConfig,
                 text_encoder: PromptedTextEncoder):
        if config.class_token_position not in NAME_POSITIONS:
            raise ConfigError(f"{{class_token_position}} must be one of {NAME_POSITIONS}, "
                              f"got {config.class_token_position!r}", fields=("class_token_position",))
        words, init_ids = init_context(tokenizer, config) if config.ctx_init.strip() else ("", [])
        if not init_ids and config.n_ctx < 1:
            raise ConfigError(f"{{n_ctx}} must be at least 1 (or give {{ctx_init}}), got {config.n_ctx}",
                              fields=("n_ctx", "ctx_init"))
        n_ctx = len(init_ids) or config.n_ctx
        super().__init__(class_prompt_layout(tokenizer, classnames, words or placeholder_context(n_ctx),
                                             learned=n_ctx, name_position=config.class_token_position,
                                             fields=("n_ctx", "ctx_init")))
        self.n_ctx = n_ctx
        self.class_specific = config.class_specific
        self.class_token_position = config.class_token_position

        if init_ids:
            init = context_from_words(text_encoder, init_ids)  # [n, width]
        else:
            width = text_encoder.width
            shape = (self.num_classes, n_ctx, width) if self.class_specific else (n_ctx, width)
            init = torch.empty(*shape).normal_(std=config.init_std)
        self.context = nn.Parameter(init)  # [n, width] unified, [C, n, width] class-specific

    def class_context(self, shift: torch.Tensor | None = None) -> torch.Tensor:
        """Each class's context ``[C, n, width]``, plus ``shift`` (``[width]`` or ``[n, width]``) if given."""
        context = self.context
        if context.dim() == 2:  # unified: the same context for every class
            context = context.unsqueeze(0).expand(self.num_classes, -1, -1)
        return context if shift is None else context + shift


class CoOp(CLIPScoredPromptLearner):
    """Frozen CLIP classifying with learned-context class prompts.

    ``forward(images) -> logits [B, C]``; ``losses(images, labels) -> ({"ce": loss}, logits)``.
    """

    def __init__(self, clip: CLIPModel, tokenizer: CLIPTokenizer, classnames: list[str], config: CoOpConfig):
        super().__init__(clip)
        self.config = config
        self.prompts = ContextPrompts(tokenizer, classnames, config, self.text_encoder)

    def text_features(self, context: torch.Tensor | None = None) -> torch.Tensor:
        """Projected text features ``[C, embed]`` of the class prompts with ``context [C, n, width]``
        in the context slots (default: the learned context)."""
        if context is None:
            context = self.prompts.class_context()
        return self.encode_prompts(self.prompts.token_embeddings(self.text_encoder.token_embedding, context))

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen CLIP image features ``[B, embed]`` (not normalised): CoOp prompts the text side only."""
        return self.frozen_image_features(images)
