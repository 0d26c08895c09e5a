"""descriptions.jsonl (llm_prompts/descriptions.py): a truncated last line is tolerated, nothing else."""
import json

import pytest

from llamp.errors import ConfigError
from llamp.knowledge_cache.files import DESCRIPTIONS_FILE
from llm_prompts.descriptions import read_descriptions


def test_descriptions_file_tolerates_only_a_truncated_last_line(tmp_path):
    path = str(tmp_path / DESCRIPTIONS_FILE)
    good = {"class": "a", "template_index": 0, "template": "{}", "answer": "x", "noun_phrases": ["x"]}
    open(path, "w").write(json.dumps(good) + "\n" + '{"class": "b", "templ')
    assert list(read_descriptions(path)) == [("a", 0)]
    open(path, "w").write('{"class": "b", "templ\n' + json.dumps(good) + "\n")
    with pytest.raises(ConfigError, match=f"{DESCRIPTIONS_FILE}:1 "):
        read_descriptions(path)
    open(path, "w").write(json.dumps({**good, "noun_phrases": "not a list"}) + "\n")
    with pytest.raises(ConfigError, match="noun_phrases"):
        read_descriptions(path)


def test_a_last_line_cut_inside_a_character_is_skipped(tmp_path):
    """A killed append can stop inside a UTF-8 character (answers are written unescaped)."""
    path = tmp_path / DESCRIPTIONS_FILE
    good = {"class": "a", "template_index": 0, "template": "{}", "answer": "x", "noun_phrases": ["x"]}
    cut = json.dumps({**good, "class": "b", "answer": "café"}, ensure_ascii=False).encode()
    path.write_bytes(json.dumps(good).encode() + b"\n" + cut[:cut.index("é".encode()) + 1])
    assert list(read_descriptions(str(path))) == [("a", 0)]
