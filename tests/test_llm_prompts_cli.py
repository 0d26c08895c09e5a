"""``python -m llm_prompts`` (llm_prompts/__main__.py, summary.py): ``inspect`` prints a summary; user
errors are one line on stderr with status 2."""
import json

from llm_prompts_cli import NUM_CLASSES, build_argv, replace_flag

from llm_prompts.__main__ import main
from llm_prompts.queries import TEMPLATES_FILE


def test_inspect_prints_a_summary(built, capsys):
    assert main(["inspect", built, "--verify"]) == 0
    out = capsys.readouterr().out
    assert "1 CLIP template(s) (our wording); recipe release" in out
    assert f"Synthetic: {NUM_CLASSES} classes" in out and f"t10  K,V [{NUM_CLASSES}, 2," in out and "bytes" in out
    assert "appears as" in out
    assert "layout    release: [pad][prompt][pad][BOS noun phrases]" in out
    assert "dtype     float32 (the LLM ran in it" in out
    assert f"wording   {TEMPLATES_FILE} (built-in, sha256 " in out


def test_cli_errors_are_one_line_with_status_2(tmp_path, tiny_models, data_root, capsys):
    argv = build_argv(data_root, tiny_models)
    cases = [
        (["--llm", str(tmp_path / "no_llm")], "--llm"),
        (["--clip", str(tmp_path / "no_clip")], "--clip"),
        (["--dataset-config-file", str(tmp_path / "none.yaml")], "--dataset-config-file"),
        (["--num-layers", "3"], "--num-layers 3"),
        (["--dtype", "fp16"], "--dtype fp16"),
        (["--layout", "mine"], "--layout mine"),
        (["--target-recipe", "mine"], "--target-recipe mine"),
        (["--query-templates", str(tmp_path / "none.json")], f"--query-templates {tmp_path / 'none.json'}"),
    ]
    chat = {"system": "S.", "user_prefix": "In one sentence, ", "answer_start": "The {} appears as"}
    bad_files = {
        "not_json": "{not json",
        "no_chat": json.dumps({"Synthetic": ["describe a {}."]}),
        "chat_without_slot": json.dumps({"_chat": {**chat, "answer_start": "It appears as"}, "default": ["a {}"]}),
        "template_without_slot": json.dumps({"_chat": chat, "Synthetic": ["describe a {}.", "describe it."]}),
        "two_slots": json.dumps({"_chat": chat, "Synthetic": ["a {} or a {}"]}),
        "not_a_list": json.dumps({"_chat": chat, "Synthetic": {"a": "{}"}}),
        "alias_to_nowhere": json.dumps({"_chat": chat, "Synthetic": "ImageNet"}),
        "no_entry": json.dumps({"_chat": chat, "ImageNet": ["describe a {}."]}),
    }
    for name, text in bad_files.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        cases.append((["--query-templates", str(path)], f"--query-templates {path}"))
    for change, flag in cases:
        args = replace_flag(argv, *change)
        assert main(args) == 2, flag
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and flag in err[0], err
    assert main(["inspect", str(tmp_path / "nothing")]) == 2
    assert "python -m llm_prompts build" in capsys.readouterr().err
