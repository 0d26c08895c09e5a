"""Where each token of a class prompt sits: the one layout every prompt learner here runs CLIP's text tower over.

A class prompt is the sentence "{context words} {class name}{suffix}", tokenised
whole (as ``clip.tokenize`` and the methods' releases tokenise it), laid out in
one row with its position ids written out::

    token     <SOT>  context and name  suffix  slot_1 .. slot_M  <EOT>  padding
    position    0    1 .. k            ..      (none)            p      p + 1 ..

* context: the words a method learns over, "a photo of a" or placeholders
  "X X X X" when the context starts at random. Its first ``learned`` tokens are
  the learned positions (MaPLe may learn "a photo" and keep "of a" as text).
  The class name comes after the context ("end"), before it ("front") or
  between its halves ("middle"), as CoOp's CLASS_TOKEN_POSITION says.
* suffix: text after the name: "." for CoOp, MaPLe and PromptSRC, none for LLaMP.
* slots: M positions for vectors injected after the position embeddings are
  added (LLaMP's layer-0 LLM prompts); they get no position, and every other
  token keeps the position it has in the sentence without the slots.
* <EOT>: where the features are read.

Rows are padded to CLIP's 77 tokens, or (``trim``) only to the longest class's
row: the tower is causal and read at <EOT>, so nothing after a class's <EOT>
can reach its features.

:class:`ClassPrompts` holds a layout as buffers and says where a method's
learned vectors go: the context into the token embeddings (it then gets its
positions' embeddings, like a word) or, when it carries its own positions, in
place of layer 0's tokens; deeper layers' context and the slots in place of
those tokens. The model runs its text tower over them
(``llamp.prompt_learner.PromptLearner.encode_prompts``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from transformers import CLIPTokenizer

from .clip.tokenizer import CONTEXT_LENGTH
from .errors import ConfigError, note
from .prompted_clip import Injection, PromptedTextEncoder, replace_positions
from .templates import class_prompt_name

NAME_POSITIONS = ("end", "middle", "front")
PLACEHOLDER_WORD = "X"  # the context's words when it starts at random: its embeddings are always replaced
PROMPT_INIT_STD = 0.02  # the releases' init of prompt vectors not taken from words
# The releases of MaPLe, IVLP and PromptSRC take the context from CTX_INIT only when N_CTX is at most this
# (a hard-coded 4); a longer context starts at random whatever CTX_INIT says.
MAX_CONTEXT_FROM_WORDS = 4


@dataclass
class ClassPromptLayout:
    """Token ids and positions of every class's prompt (module doc); one row per class."""

    classnames: list[str]
    input_ids: torch.Tensor  # [C, seq]; the slots hold padding ids, their vectors are always replaced
    position_ids: torch.Tensor  # [C, seq]
    eos_positions: torch.Tensor  # [C]
    context_positions: torch.Tensor  # [C, learned]
    slot_positions: torch.Tensor  # [C, M]
    name_positions: list[list[int]]  # per class, the name's token positions
    context_ids: list[int]  # the context's token ids (the same for every class)


def placeholder_context(n: int) -> str:
    """The context words of a context learned from random: ``n`` placeholders."""
    return " ".join([PLACEHOLDER_WORD] * n)


def class_prompt_layout(tokenizer: CLIPTokenizer, classnames: list[str], context: str, *,
                        learned: int | None = None, name_position: str = "end", suffix: str = ".",
                        slots: int = 0, trim: bool = False, fields: Sequence[str] = ()) -> ClassPromptLayout:
    """The layout of "{context} {class name}{suffix}" with ``slots`` injection slots before <EOT>.

    ``learned``: how many of the context's first tokens are learned (default all).
    ``fields``: the config fields that set the prompt's length, named when a class
    does not fit CLIP's 77 tokens.
    """
    if name_position not in NAME_POSITIONS:
        raise ValueError(f"name_position must be one of {NAME_POSITIONS}, got {name_position!r}")
    context_ids = tokenizer(context, add_special_tokens=False).input_ids
    n = len(context_ids)
    learned = n if learned is None else learned
    if not 0 < learned <= n:
        raise ValueError(f"{learned} learned context tokens asked of a context of {n} ({context!r})")
    names = [class_prompt_name(c) for c in classnames]
    sentences = tokenizer([f"{context} {name}{suffix}" for name in names]).input_ids  # <SOT> ... <EOT>
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows, positions, context_at, name_at, eos, too_long = [], [], [], [], [], []
    for classname, name, ids in zip(classnames, names, sentences):
        if ids[1:1 + n] != context_ids:
            raise ConfigError(f"the context {context!r} tokenises differently before the class name {name!r}")
        k = len(tokenizer(name, add_special_tokens=False).input_ids)
        ctx, name_ids, rest = ids[1:1 + n], ids[1 + n:1 + n + k], ids[1 + n + k:-1]  # rest: the suffix
        if name_position == "end":
            body, ctx_at, at = ctx + name_ids, list(range(n)), list(range(n, n + k))
        elif name_position == "front":
            body, ctx_at, at = name_ids + ctx, list(range(k, k + n)), list(range(k))
        else:  # middle: the first half of the context, the name, the second half
            half = n // 2
            body = ctx[:half] + name_ids + ctx[half:]
            ctx_at, at = list(range(half)) + list(range(half + k, n + k)), list(range(half, half + k))
        end = 1 + len(body) + len(rest)  # where <EOT> sits without the slots: its position
        row = ids[:1] + body + rest + [pad] * slots + ids[-1:]
        if len(row) > CONTEXT_LENGTH:
            too_long.append(classname)
            continue
        rows.append(row)
        positions.append(list(range(end)) + [0] * slots + [end])
        context_at.append([1 + i for i in ctx_at[:learned]])  # + 1: after <SOT>
        name_at.append([1 + i for i in at])
        eos.append(end + slots)
    if too_long:
        what = f"{n} context tokens" + (f" and {slots} prompt slots" if slots else "")
        raise ConfigError(f"class names too long for CLIP's {CONTEXT_LENGTH} tokens with {what}"
                          + (f" ({', '.join('{' + f + '}' for f in fields)})" if fields else "")
                          + f": {too_long[:3]}", fields=fields)
    seq = max(len(row) for row in rows) if trim else CONTEXT_LENGTH
    for row, pos in zip(rows, positions):  # padding keeps counting positions, as it does in a sentence
        pos.extend(range(pos[-1] + 1, pos[-1] + 1 + seq - len(row)))
        row.extend([pad] * (seq - len(row)))
    return ClassPromptLayout(
        classnames=list(classnames), input_ids=torch.tensor(rows), position_ids=torch.tensor(positions),
        eos_positions=torch.tensor(eos), context_positions=torch.tensor(context_at),
        slot_positions=torch.tensor([list(range(e - slots, e)) for e in eos], dtype=torch.long),
        name_positions=name_at, context_ids=list(context_ids))


class ClassPrompts(nn.Module):
    """A :class:`ClassPromptLayout` as buffers (they follow the model's device and stay out of checkpoints),
    and where a method's learned vectors go in it: :meth:`token_embeddings` for layer 0, :meth:`injections`
    for the tokens they replace as they enter a text layer. The model then runs its text tower over them
    (``PromptLearner.encode_prompts``)."""

    def __init__(self, layout: ClassPromptLayout):
        super().__init__()
        self.classnames = layout.classnames
        self.name_positions = layout.name_positions
        self.context_ids = layout.context_ids
        for name in ("input_ids", "position_ids", "eos_positions", "context_positions", "slot_positions"):
            self.register_buffer(name, getattr(layout, name), persistent=False)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def per_class(self, vectors: torch.Tensor) -> torch.Tensor:
        """``[C, n, width]``: ``vectors`` as they are, or ``[n, width]`` (the same for every class) expanded."""
        return vectors if vectors.dim() == 3 else vectors.unsqueeze(0).expand(self.num_classes, -1, -1)

    def token_embeddings(self, embed_tokens: Callable[[torch.Tensor], torch.Tensor],
                         context: torch.Tensor | None = None) -> torch.Tensor:
        """Layer-0 token embeddings ``[C, seq, width]``; ``context`` (``[n, width]`` or ``[C, n, width]``), if
        given, at the context positions, where it then gets their position embeddings like the words it
        replaces. A context that carries its own positions goes in as a layer-0 injection instead."""
        embeds = embed_tokens(self.input_ids)
        return embeds if context is None else replace_positions(embeds, self.context_positions,
                                                                 self.per_class(context))

    def injections(self, contexts: Sequence[torch.Tensor], first_layer: int,
                   slots: Sequence[torch.Tensor] = ()) -> dict[int, list[Injection]]:
        """What replaces tokens as they enter text layers (after position embeddings are added):
        ``contexts[i]`` (``[n, width]`` or ``[C, n, width]``) the context entering layer ``first_layer + i``,
        ``slots[d]`` (``[C, M, width]``) the slots entering layer ``d``."""
        injections: dict[int, list[Injection]] = {}
        for i, context in enumerate(contexts):
            injections.setdefault(first_layer + i, []).append((self.context_positions, self.per_class(context)))
        for depth, vectors in enumerate(slots):
            injections.setdefault(depth, []).append((self.slot_positions, vectors))
        return injections


def context_from_words(text_encoder: PromptedTextEncoder, ids: Sequence[int]) -> torch.Tensor:
    """The token embeddings of ``ids`` ``[n, width]`` (fp32, CPU): a context initialised from words."""
    device = text_encoder.embeddings.token_embedding.weight.device
    with torch.no_grad():
        return text_encoder.token_embedding(torch.tensor(list(ids), device=device)).detach().float().cpu().clone()


def sentence_context(text_encoder: PromptedTextEncoder, tokenizer: CLIPTokenizer, classnames: list[str],
                     n_ctx: int, ctx_init: str, n_ctx_field: str = "n_ctx",
                     ctx_init_field: str = "ctx_init") -> tuple[ClassPrompts, torch.Tensor]:
    """MaPLe's and PromptSRC's class prompts, and the initial context ``[n_ctx, width]``.

    With ``ctx_init`` (e.g. "a photo of a", "_" a space) and ``n_ctx`` at most
    MAX_CONTEXT_FROM_WORDS, the sentence is "a photo of a {class}." and its first
    ``n_ctx`` tokens are learned, starting from their embeddings; otherwise (as in
    the releases, with a note when ``ctx_init`` goes unused) it is "X ... X {class}."
    with a random context, N(0, PROMPT_INIT_STD^2). ``n_ctx_field`` and ``ctx_init_field``
    name the config fields in errors.
    """
    if n_ctx < 1:
        raise ConfigError(f"{{{n_ctx_field}}} must be >= 1, got {n_ctx}", fields=(n_ctx_field,))
    if ctx_init and n_ctx > MAX_CONTEXT_FROM_WORDS:
        note(f"{{{ctx_init_field}}} {ctx_init!r} is not used: {{{n_ctx_field}}} {n_ctx} > {MAX_CONTEXT_FROM_WORDS}, "
             f"and the releases initialise only up to {MAX_CONTEXT_FROM_WORDS} context tokens from words: "
             "the context starts at random", fields=(ctx_init_field, n_ctx_field))
        ctx_init = ""
    if ctx_init:
        words = ctx_init.replace("_", " ")
        count = len(tokenizer(words, add_special_tokens=False).input_ids)
        if count < n_ctx:  # the releases would learn the class name's tokens as context
            n, init = f"{{{n_ctx_field}}}", f"{{{ctx_init_field}}}"
            lower = f"lower {n} to {count}, " if count else ""
            raise ConfigError(f"{init} {ctx_init!r} has {count} tokens, fewer than {n} {n_ctx}: lengthen it to at "
                              f"least {n_ctx} tokens (e.g. 'a photo of a'), {lower}or set {init} '' (random init)",
                              fields=(n_ctx_field, ctx_init_field))
    else:
        words = placeholder_context(n_ctx)
    prompts = ClassPrompts(class_prompt_layout(tokenizer, classnames, words, learned=n_ctx,
                                               fields=(ctx_init_field,)))
    if ctx_init:
        return prompts, context_from_words(text_encoder, prompts.context_ids[:n_ctx])
    return prompts, torch.empty(n_ctx, text_encoder.width).normal_(std=PROMPT_INIT_STD)
