"""Building one dataset's knowledge cache (the README's "1. Knowledge cache"), resumably.

For each query template, in order:
  1. answers: reuse the template's records in ``descriptions.jsonl`` that were
     generated from the same prompt ids, dtype and length limit; generate the
     missing ones greedily (appended a batch at a time);
  2. noun phrases of each answer (kept as stored when present: hand edits win);
  3. keys/values of the layout's token sequence (``layouts``; by default the
     release's ``[pad][prompt][pad][BOS noun phrases]``) for the last N decoder
     layers, written as ``kv_tNN.safetensors`` — skipped when the file on disk
     was built from exactly the same token ids, mask, layers and dtype.
Then the distillation targets (``targets``: the recipe, ``--target-recipe``, is one of
their inputs; skipped likewise when their inputs and the recorded CLIP are
unchanged), and ``metadata.json`` is marked complete. Killing the build at any
point loses at most the batch in progress; running it again finishes the job,
and after a hand edit of ``descriptions.jsonl`` or of the query-template file
recomputes only what the edit touches. The LLM is loaded only if something
must be generated or extracted.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tqdm import tqdm

from llamp.clip.loading import KNOWN_BACKBONES, LoadedCLIP, load_clip
from llamp.errors import ConfigError, naming
from llamp.knowledge_cache.files import DESCRIPTIONS_FILE, dtype_name
from llamp.knowledge_cache.writer import CacheWriter
from llamp.llm.identity import LLM_PATH, llm_identity, load_llm_config, resolve_llm_folder
from llamp.llm.tail import decoder_stack, layer_windows
from llamp.llm.weights import llm_layer_sha256
from llamp.quiet import progress_disabled
from llamp.templates import configured_templates

from . import generation, kv, layouts
from .descriptions import append_descriptions, make_record, read_descriptions, record_key, write_descriptions
from .llm import DEFAULT_BUILD_DTYPE, build_dtype, load_llm, load_tokenizer, pick_device
from .noun_phrases import make_extractor
from .queries import chat_prompt, load_query_file
from .targets import RELEASE as RELEASE_RECIPE
from .targets import check_recipe, distillation_targets, recipe_phrases, recipe_templates


CLIP_TEMPLATES_FLAG = "--clip-templates"


@dataclass
class BuildConfig:
    """What ``python -m llm_prompts build`` was asked to do (its flags)."""

    llm: str
    clip: str
    out: str
    num_layers: int = 1
    batch_size: int = 16
    max_new_tokens: int = 64
    device: str | None = None
    dtype: str = DEFAULT_BUILD_DTYPE
    layout: str = layouts.RELEASE
    query_templates: str | None = None  # a JSON file in the format of templates/query_templates.json
    clip_templates: str | None = None  # CLIP templates of the targets: a JSON file (llamp.templates); None: ours
    target_recipe: str = RELEASE_RECIPE  # how the distillation targets are made (llm_prompts.targets)
    spacy_model: str | None = None
    regenerate: bool = False
    build_command: str = ""
    progress: bool = True


@dataclass
class BuildReport:
    folder: str
    generated: int = 0  # answers generated in this run
    reused: int = 0  # answers taken from descriptions.jsonl
    kv_written: list[int] = field(default_factory=list)  # template indices (re)computed
    kv_kept: list[int] = field(default_factory=list)  # template indices already up to date
    targets_written: bool = False
    seconds: float = 0.0


def load_clip_arg(spec: str) -> LoadedCLIP:
    """``--clip``: a known backbone name (found in the usual caches), a folder, a .pt file or a cached hub name."""
    try:
        return load_clip(spec, "") if spec in KNOWN_BACKBONES else load_clip("", spec)
    except ConfigError as e:
        raise type(e)(f"--clip {spec}: {e}") from None


def _sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=True).encode("utf-8")).hexdigest()


def _log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


# The library names the LLM and CLIP it is given by field (llamp.errors.ConfigError); here they are flags.
BUILD_FLAGS = {LLM_PATH: "--llm", "num_layers": "--num-layers", "clip_path": "--clip", "clip_name": "--clip"}


def build_cache(dataset: str, classnames: list[str], config: BuildConfig,
                log: Callable[[str], None] = _log) -> BuildReport:
    """Build (or finish, or update) the cache of ``dataset`` in ``config.out``."""
    with naming(BUILD_FLAGS):
        return _build_cache(dataset, classnames, config, log)


def _build_cache(dataset: str, classnames: list[str], config: BuildConfig, log: Callable[[str], None]) -> BuildReport:
    start_time = time.time()
    for flag, value in (("--num-layers", config.num_layers), ("--batch-size", config.batch_size),
                        ("--max-new-tokens", config.max_new_tokens)):
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")
    if not classnames:
        raise ConfigError(f"dataset {dataset} has no classes")

    # Everything that can fail on user input fails here, before hours of generation.
    layout = layouts.get_layout(config.layout)
    recipe = check_recipe(config.target_recipe)
    dtype = build_dtype(config.dtype)
    query_file = load_query_file(config.query_templates)
    templates = query_file.templates(dataset)
    wording = query_file.wording
    clip_choice = configured_templates(config.clip_templates, dataset, CLIP_TEMPLATES_FLAG, ensemble=True)
    clip_templates = recipe_templates(recipe, clip_choice.templates)
    llm_source = resolve_llm_folder(config.llm)  # its config, weights, tokenizer and model are all read here
    llm_config = load_llm_config(llm_source)
    decoder_stack(llm_config)  # a cache the prompt decoder cannot use is refused now, not after the build
    num_llm_layers = llm_config.num_hidden_layers
    if config.num_layers > num_llm_layers:
        raise ConfigError(f"--num-layers {config.num_layers}: {config.llm} has only {num_llm_layers} layers")
    kept_layers = list(range(num_llm_layers - config.num_layers, num_llm_layers))
    window = min((w for w in layer_windows(llm_config) if w is not None), default=None)
    # the kept layers' weight digests tie the cache to this exact LLM (fine-tunes share the config)
    identity = llm_identity(llm_source, llm_layer_sha256(llm_source, kept_layers))
    device = pick_device(config.device)
    tokenizer = load_tokenizer(llm_source)
    clip = load_clip_arg(config.clip)
    extractor = make_extractor(config.spacy_model, all_chunks=layout.all_noun_chunks)
    if not query_file.has(dataset):
        log(f"note: no query templates for {dataset} in {query_file.path}; using the 'default' ones")
    if layout.all_noun_chunks and not extractor.name.startswith("spacy:"):
        log(f"note: the {layout.name} layout takes spaCy's noun chunks, but no spaCy pipeline is used: "
            "rule-based noun phrases instead")

    report = BuildReport(folder=os.path.abspath(config.out))
    writer = CacheWriter(config.out, {
        "dataset": dataset,
        "classnames": list(classnames),
        "query_templates": templates,
        "query_template_file": query_file.describe(),
        "prompt": {"system": wording.system, "user_prefix": wording.user_prefix,
                   "answer_start": wording.answer_start},
        "layout": layout.name,
        "llm": identity,
        "kept_layers": kept_layers,
        "dtype": dtype_name(dtype),
        "generation": {"max_new_tokens": config.max_new_tokens, "do_sample": False},
        "noun_phrases": extractor.name,
        "build_command": config.build_command,
    })
    log(f"building the knowledge cache of {dataset} ({len(classnames)} classes x {len(templates)} templates) "
        f"in {report.folder} with {llm_source} on {device} ({dtype_name(dtype)}); layout {layout.name}; query "
        f"templates from {query_file.path}; noun phrases: {extractor.name}; targets: {recipe} recipe")

    descriptions_path = os.path.join(config.out, DESCRIPTIONS_FILE)
    records = {} if config.regenerate else read_descriptions(descriptions_path)
    order = _canonical_order(classnames, len(templates))
    # Rewritten now so that appends start on a clean line (a killed run may have left half a line).
    write_descriptions(descriptions_path, _ordered(records, order))

    model = None

    def get_model():
        nonlocal model
        if model is None:
            log(f"loading {llm_source} ...")
            model = load_llm(llm_source, device, dtype)
        return model

    other_method = 0  # stored noun phrases kept although another method (or a hand) made them
    for t, template in enumerate(tqdm(templates, desc="templates", unit="template",
                                      disable=progress_disabled(config.progress))):
        prompts = [chat_prompt(tokenizer, wording.question(template, c), wording.answer_opening(c), wording.system)
                   for c in classnames]
        prompt_ids = layouts.prompt_tokens(tokenizer, prompts, layout)  # all classes padded together
        _check_window(window, prompt_ids, t, config.llm)
        if prompt_ids.truncated:
            log(f"note: template {t}: {prompt_ids.truncated} prompt(s) longer than {layout.max_tokens} tokens "
                "were cut, as the release cuts them")
        generated_with = [_sha256({"prompt_ids": ids, "dtype": dtype_name(dtype),
                                   "max_new_tokens": config.max_new_tokens}) for ids in prompt_ids.real_ids()]
        stale = [c for c, key in zip(classnames, generated_with)
                 if (c, t) in records and records[(c, t)].get("generation_sha256") != key]
        if stale:
            log(f"template {t}: {len(stale)} stored answer(s) were not generated from this prompt, dtype and "
                "length limit: generating them again")
            for c in stale:
                del records[(c, t)]
        missing = [i for i, c in enumerate(classnames) if (c, t) not in records]
        report.reused += len(classnames) - len(missing)
        # Batches at fixed places in the class list: an answer comes from the batch (same rows, same
        # arithmetic) it would come from in a build run through, after a kill that kept part of a batch too.
        wanted = set(missing)
        batches = sorted({i // config.batch_size for i in missing})
        for b in tqdm(batches, desc="generate", unit="batch", leave=False,
                      disable=progress_disabled(config.progress)):
            chunk = list(range(b * config.batch_size, min((b + 1) * config.batch_size, len(classnames))))
            answers = generation.generate_answers(get_model(), tokenizer, prompt_ids.rows(chunk),
                                                  max_new_tokens=config.max_new_tokens,
                                                  batch_size=config.batch_size, progress=False)
            new = [make_record(dataset=dataset, **{"class": classnames[i]}, template_index=t, template=template,
                               question=wording.question(template, classnames[i]),
                               answer_start=wording.answer_opening(classnames[i]), answer=answer.strip(),
                               # the release parses the answer as decoded; ours, stripped
                               noun_phrases=extractor(answer if layout.all_noun_chunks else answer.strip()),
                               noun_phrase_method=extractor.name, generation_sha256=generated_with[i])
                   for i, answer in zip(chunk, answers) if i in wanted]
            append_descriptions(descriptions_path, new)
            records.update((record_key(r), r) for r in new)
            report.generated += len(new)

        phrases = []
        for c in classnames:
            record = records[(c, t)]
            if record.get("noun_phrases") is None:  # set to null by hand: extract from the (edited) answer
                record["noun_phrases"] = extractor(record["answer"])
                record["noun_phrase_method"] = extractor.name
            elif record.get("noun_phrase_method") != extractor.name:
                other_method += 1
            phrases.append(record["noun_phrases"])
        sequence, cut_phrases = layouts.cached_tokens(tokenizer, prompts, phrases, layout)
        _check_window(window, sequence, t, config.llm)
        if cut_phrases:
            log(f"note: template {t}: {cut_phrases} noun-phrase list(s) longer than {layout.max_tokens} tokens "
                "were cut, as the release cuts them")
        input_sha256 = _sha256({"token_ids": sequence.input_ids.tolist(), "mask": sequence.attention_mask.tolist(),
                                "layout": layout.name, "layers": kept_layers, "dtype": dtype_name(dtype),
                                "llm": [identity["config_sha256"], identity["layer_sha256"]]})
        if writer.template_done(t, input_sha256):
            report.kv_kept.append(t)
            continue
        layer_kv, mask = kv.extract_kv(get_model(), sequence, kept_layers, batch_size=config.batch_size,
                                       progress=config.progress)
        writer.write_template(t, layer_kv, mask, input_sha256)
        report.kv_written.append(t)
        del layer_kv, mask

    write_descriptions(descriptions_path, _ordered(records, order))
    if other_method:
        log(f"note: {other_method} stored noun-phrase lists were not made by {extractor.name} and were kept (hand "
            "edits win); set their noun_phrases to null in descriptions.jsonl, or use --regenerate, to extract "
            "them again")
    model = None  # free the LLM before CLIP runs

    class_phrases = [recipe_phrases(recipe, [records[(c, t)]["noun_phrases"] for t in range(len(templates))])
                     for c in classnames]
    clip_sha256 = clip.text_sha256()
    targets_sha256 = _sha256({"classnames": list(classnames), "phrases": class_phrases, "recipe": recipe,
                              "clip_templates": clip_templates, "clip": clip_sha256})
    if not writer.targets_done(targets_sha256, clip_sha256):
        clip.model.to(device)
        targets = distillation_targets(clip, classnames, class_phrases, clip_templates,
                                       batch_size=max(config.batch_size, 256), progress=config.progress)
        writer.write_targets(targets, targets_sha256, recipe=recipe,
                             clip={"source": clip.source, "text_sha256": clip_sha256},
                             clip_templates=clip_templates, clip_template_source=clip_choice.describe())
        report.targets_written = True
    writer.finish()
    report.seconds = time.time() - start_time
    return report


def _check_window(window: int | None, tokens: layouts.Tokens, template: int, llm: str) -> None:
    """Refuse padded sequences a sliding window would cut: the LLM windows (and its cache crops) by slot,
    padding included, so the keys/values would no longer be those of the unpadded text."""
    width = tokens.input_ids.shape[1]
    if window is not None and width >= window:
        raise ConfigError(f"--llm {llm}: its sliding-window attention ({window} tokens, config.json "
                          f"sliding_window) is not longer than template {template}'s padded sequence ({width} "
                          "tokens): such LLMs are supported only while every cached sequence fits in the window")


def _canonical_order(classnames: list[str], num_templates: int) -> dict[tuple[str, int], int]:
    """File order of descriptions.jsonl: by template, then by class label."""
    return {(c, t): t * len(classnames) + i for t in range(num_templates) for i, c in enumerate(classnames)}


def _ordered(records: dict, order: dict) -> list[dict]:
    """Known records in canonical order, then any others (other classes/templates) as they were."""
    known = sorted((k for k in records if k in order), key=order.__getitem__)
    return [records[k] for k in known] + [r for k, r in records.items() if k not in order]
