"""What the LLM is asked (llm_prompts/queries.py): the chat prompt comes from the tokenizer's template,
and the query templates cover every dataset."""
from llm_prompts.queries import chat_prompt, query_templates


def test_chat_prompt_comes_from_the_tokenizer_template(tiny_llm):
    tokenizer = tiny_llm[1]
    prompt = chat_prompt(tokenizer, "In one sentence, describe a red circle.", "The red circle appears as",
                         "You are a helpful assistant.")
    assert prompt == ("<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\n"
                      "In one sentence, describe a red circle. [/INST] The red circle appears as")
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    # Like LLaMA-2's, the tiny tokenizer adds a BOS of its own: the rendered chat then starts with two.
    assert tokenizer(prompt)["input_ids"] == [tokenizer.bos_token_id] + ids

    chatml = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    no_system = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
                 "{% endif %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}[assistant]{% endif %}")
    original = tokenizer.chat_template
    try:
        tokenizer.chat_template = chatml
        assert chat_prompt(tokenizer, "Q?", "The x appears as", "S.") == (
            "<|im_start|>system\nS.<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
            "The x appears as")
        tokenizer.chat_template = no_system
        assert chat_prompt(tokenizer, "Q?", "The x appears as", "S.").startswith("[user] S.\n\nQ?\n")
    finally:
        tokenizer.chat_template = original


def test_query_templates_cover_every_dataset():
    names = ["ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "OxfordFlowers", "Food101", "FGVCAircraft",
             "SUN397", "DescribableTextures", "EuroSAT", "UCF101", "Synthetic"]
    for name in names:
        templates = query_templates(name)
        assert len(templates) == 11 and len(set(templates)) == 11, name
        assert all(t.count("{}") == 1 for t in templates), name
    for variant in ("ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR", "NotADataset"):
        assert query_templates(variant) == query_templates("ImageNet")
    assert query_templates("OxfordPets")[0] == "describe the distinctive appearance of a {}, a type of pet."
