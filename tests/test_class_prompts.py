"""The one class-prompt layout (llamp/class_prompts.py): token ids, positions and slots, checked against the
sentence CLIP's own tokenizer makes, and the text tower's pass over it against stock CLIP."""
import pytest
import torch

from llamp.class_prompts import ClassPrompts, class_prompt_layout, placeholder_context
from llamp.errors import ConfigError
from llamp.prompted_clip import PromptedTextEncoder

CLASSNAMES = ["red circle", "ring-tailed lemur of madagascar", "t-shirt (tee)"]  # 2, 8 and 5 tokens


def test_the_sentence_is_clips_own_tokenisation_padded_to_77(tiny_clip):
    tok = tiny_clip.tokenizer
    layout = class_prompt_layout(tok, CLASSNAMES, "a photo of a")
    # the last name ends in ")", which CLIP merges with the period: the whole sentence is tokenised
    assert torch.equal(layout.input_ids, tiny_clip.tokenize([f"a photo of a {c}." for c in CLASSNAMES]))
    assert torch.equal(layout.position_ids, torch.arange(77).expand(3, -1))
    assert layout.eos_positions.tolist() == [(ids == tok.eos_token_id).nonzero()[0].item() for ids in layout.input_ids]
    assert layout.context_positions.tolist() == [[1, 2, 3, 4]] * 3
    assert layout.slot_positions.shape == (3, 0)
    assert layout.name_positions[0] == [5, 6] and layout.context_ids == layout.input_ids[0, 1:5].tolist()


@pytest.mark.parametrize("position,context_at,name_at", [
    ("end", [1, 2, 3, 4], [5, 6]), ("front", [3, 4, 5, 6], [1, 2]), ("middle", [1, 2, 5, 6], [3, 4])])
def test_the_name_goes_where_asked_and_only_the_first_learned_tokens_are_context(tiny_clip, position, context_at,
                                                                                 name_at):
    tok = tiny_clip.tokenizer
    layout = class_prompt_layout(tok, CLASSNAMES[:1], placeholder_context(4), name_position=position)
    assert layout.context_positions[0].tolist() == context_at and layout.name_positions[0] == name_at
    ids = layout.input_ids[0].tolist()
    assert [ids[i] for i in name_at] == tok("red circle", add_special_tokens=False).input_ids
    assert {ids[i] for i in context_at} == set(tok("X", add_special_tokens=False).input_ids)
    partly = class_prompt_layout(tok, CLASSNAMES[:1], "a photo of a", learned=2)
    assert partly.context_positions[0].tolist() == [1, 2]  # "of a" stays text


def test_slots_take_no_position_and_the_end_token_keeps_its_own(tiny_clip):
    """LLaMP's layout: <SOT> context name, M slots, <EOT> at the position it has without them; trimmed."""
    tok, m = tiny_clip.tokenizer, 3
    layout = class_prompt_layout(tok, CLASSNAMES, "a photo of a", suffix="", slots=m, trim=True)
    natural = [tok(f"a photo of a {c}").input_ids for c in CLASSNAMES]
    assert layout.input_ids.shape == (3, max(len(ids) for ids in natural) + m)
    for c, ids in enumerate(natural):
        end = len(ids) - 1  # <EOT>'s index (and position) without the slots
        assert layout.slot_positions[c].tolist() == [end, end + 1, end + 2]
        assert layout.eos_positions[c].item() == end + m
        assert layout.input_ids[c, :end].tolist() == ids[:-1] and layout.input_ids[c, end + m].item() == ids[-1]
        positions = layout.position_ids[c].tolist()
        assert positions[:end] == list(range(end)) and positions[end + m] == end
        assert positions[end + m + 1:] == list(range(end + 1, end + 1 + len(positions) - end - m - 1))


def test_too_long_names_are_one_line_errors_naming_the_settings(tiny_clip):
    with pytest.raises(ConfigError, match=r"too long .* 4 context tokens and 40 prompt slots \(some_field\)") as e:
        class_prompt_layout(tiny_clip.tokenizer, ["word " * 35], "a photo of a", slots=40, fields=("some_field",))
    assert "(SOME.KEY)" in str(e.value.naming({"some_field": "SOME.KEY"}))


def test_the_words_of_the_context_through_the_layout_give_stock_clip_features(tiny_clip):
    """The context (its own words' embeddings) in the token embeddings: CLIP's features of the sentence. Carrying
    its positions (token + position embeddings) and replacing layer 0's tokens: the same again."""
    tok, model = tiny_clip.tokenizer, tiny_clip.model
    encoder = PromptedTextEncoder(model)
    prompts = ClassPrompts(class_prompt_layout(tok, CLASSNAMES, "a photo of a"))
    stock = model.get_text_features(input_ids=prompts.input_ids).pooler_output
    def features(embeds, injections=None):
        return encoder(embeds, prompts.eos_positions, injections, prompts.position_ids)

    with torch.no_grad():
        words = encoder.token_embedding(torch.tensor(prompts.context_ids))  # [4, width]
        ours = features(prompts.token_embeddings(encoder.token_embedding, words))
        positioned = words + encoder.embeddings.position_embedding(torch.arange(1, 5))
        carried = features(prompts.token_embeddings(encoder.token_embedding),
                           prompts.injections([positioned], first_layer=0))
        other = features(prompts.token_embeddings(encoder.token_embedding, words + 0.5 * torch.randn_like(words)))
    assert (ours - stock).abs().max() < 1e-5 and (carried - stock).abs().max() < 1e-5
    assert (other - stock).abs().max() > 1e-3
