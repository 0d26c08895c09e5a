"""Noun phrases of an LLM answer (llm_prompts/noun_phrases.py): the rule-based fallback and spaCy's."""
import pytest
from llm_prompts_cli import english_spacy_pipeline

from llamp.errors import ConfigError
from llm_prompts.noun_phrases import make_extractor, rule_noun_phrases


SENTENCE = "a slender cat with large pointed ears, a ticked golden coat and almond-shaped green eyes."
EXPECTED_PHRASES = ["a slender cat", "large pointed ears", "a ticked golden coat", "almond-shaped green eyes"]


def test_rule_based_noun_phrases():
    assert rule_noun_phrases(SENTENCE) == EXPECTED_PHRASES
    assert rule_noun_phrases("a small bird that has bright red feathers and is perched on a branch.") == [
        "a small bird", "bright red feathers", "a branch"]
    extractor = make_extractor("none")
    assert extractor.name == "rules" and extractor(SENTENCE) == EXPECTED_PHRASES


def test_spacy_noun_phrases():
    name = english_spacy_pipeline()
    extractor = make_extractor(name)
    assert extractor.name == f"spacy:{name}"
    assert extractor(SENTENCE) == EXPECTED_PHRASES
    assert extractor("It has a long tail.") == ["a long tail"]  # pronoun-only chunks dropped
    assert make_extractor(None).name.startswith("spacy:")
    # The release layout takes every noun chunk as spaCy gives it: pronouns and repeats stay.
    release = make_extractor(name, all_chunks=True)
    assert release.name == f"spacy:{name}:all-chunks"
    assert release("It has a long tail and a long tail.") == ["It", "a long tail", "a long tail"]
    assert extractor("It has a long tail and a long tail.") == ["a long tail"]


def test_named_spacy_pipeline_must_exist():
    with pytest.raises(ConfigError, match="--spacy-model no_such_pipeline"):
        make_extractor("no_such_pipeline")
