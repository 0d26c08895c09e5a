"""The sequences whose keys/values a build caches (llm_prompts/layouts.py): the stored keys/values are those
of a plain, unpadded forward of the LLM over the same text, padding masked where the layout puts it; the
release layout's sequence equals one built by hand from the tokenizer.
"""
import os

import torch
from llm_prompts_cli import check_against_forward, english_spacy_pipeline

from llamp.knowledge_cache.files import DESCRIPTIONS_FILE
from llamp.knowledge_cache.reader import KnowledgeCache
from llm_prompts.descriptions import read_descriptions


def test_cached_kv_equal_an_unpadded_forward(built, tiny_llm):
    cache = KnowledgeCache.open(built)
    assert cache.layout == "release"
    pads = [check_against_forward(cache, tiny_llm, c, t, layer=1)
            for c, t in [(0, 0), (5, 3), (11, 10), (7, 6), (2, 9)]]
    assert max(pads) > 0  # some of them were padded: the check covered padding
    masks = [cache.kv(t, [c], trim=False).mask[0] for c, t in [(0, 0), (5, 3), (11, 10), (7, 6), (2, 9)]]
    assert any((m[int(m.argmax()):] == 0).any() for m in masks)  # ... and a gap between prompt and phrases


def test_release_sequence_equals_one_built_by_hand_from_the_tokenizer(tmp_path, tiny_models, tiny_llm):
    """Points 1-3 of the release's cache, written out here from the tokenizer alone, for two classes."""
    pipeline = english_spacy_pipeline()
    import spacy

    from llm_prompts.build import BuildConfig, build_cache

    classes = ["red circle", "red cross"]  # prompts of different lengths: one of them is left-padded
    out = str(tmp_path / "release")
    # One class per batch: batches must keep the width of the whole template's padding, as the release's do.
    build_cache("Synthetic", classes, BuildConfig(llm=tiny_models["llm"], clip=tiny_models["clip"], out=out,
                                                  num_layers=2, batch_size=1, max_new_tokens=16, device="cpu",
                                                  spacy_model=pipeline, progress=False), log=lambda _: None)
    cache = KnowledgeCache.open(out)
    assert cache.layout == "release" and cache.dtype == torch.float32
    records = read_descriptions(os.path.join(out, DESCRIPTIONS_FILE))

    model = tiny_llm[0]
    tokenizer = type(tiny_llm[1]).from_pretrained(tiny_models["llm"])
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.unk_token, "left"
    bos = tokenizer.bos_token_id
    nlp = spacy.load(pipeline)
    for t, template in enumerate(cache.query_templates[:3]):
        # 1. The chat rendered to text, the answer opening appended, tokenised WITH special tokens.
        texts = [tokenizer.apply_chat_template(
            [{"role": "system", "content": "You are a helpful assistant."},
             {"role": "user", "content": "In one sentence, " + template.format(c)}], tokenize=False)
            + f" The {c} appears as" for c in classes]
        prompt = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        # 2. Greedy answers from that left-padded prompt; spaCy's noun chunks of each, joined with ", ".
        with torch.no_grad():
            generated = model.generate(input_ids=prompt.input_ids, attention_mask=prompt.attention_mask,
                                       do_sample=False, max_new_tokens=16, pad_token_id=tokenizer.pad_token_id)
        answers = tokenizer.batch_decode(generated[:, prompt.input_ids.shape[1]:], skip_special_tokens=True)
        chunks = [[chunk.text for chunk in nlp(answer).noun_chunks] for answer in answers]
        for c, answer, phrases in zip(classes, answers, chunks):
            assert records[(c, t)]["answer"] == answer.strip() and records[(c, t)]["noun_phrases"] == phrases
        # 3. The joined phrases tokenised on their own, WITH the BOS, left-padded, appended after the prompt.
        phrases = tokenizer([", ".join(p) for p in chunks], padding=True, truncation=True, max_length=128,
                            return_tensors="pt")
        ids = torch.cat([prompt.input_ids, phrases.input_ids], dim=1)
        mask = torch.cat([prompt.attention_mask, phrases.attention_mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # running count of real tokens: on across the gap
        prompt_width = prompt.input_ids.shape[1]
        for row in range(len(classes)):
            real = ids[row][mask[row].bool()].tolist()
            n_prompt = int(prompt.attention_mask[row].sum())
            assert real[:2] == [bos, bos] and real[n_prompt] == bos  # two BOS, and one before the phrases
        assert (mask[:, 0] == 0).any()  # a left-padded row ...
        assert ((mask[:, prompt_width - 1] == 1) & (mask[:, prompt_width] == 0)).any()  # ... and a gap
        assert (phrases.attention_mask.sum(-1) > 1).all()  # every row has phrases after its BOS

        with torch.no_grad():
            direct = model.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        direct_cache = direct["cache"] if "cache" in direct else direct["past_key_values"]
        got = cache.kv(t, cache.select(classes), trim=False)
        assert torch.equal(got.mask, mask)
        keep = mask.bool()[:, None, :, None]
        for layer, keys, values in zip(got.layer_indices, got.keys, got.values):
            for stored, expected in ((keys, direct_cache.layers[layer].keys),
                                     (values, direct_cache.layers[layer].values)):
                assert (stored - expected).masked_fill(~keep, 0).abs().max() < 1e-5
            for c in range(len(classes)):  # and without any padding at all: real tokens at 0 .. n-1
                check_against_forward(cache, tiny_llm, c, t, layer)
