"""Text a causal LM cannot take is refused in one line (exit 2), as the classifiers refuse it: a lone surrogate
(an argument's undecodable bytes) raised TypeError deep in tokenizers, an empty prompt "cannot reshape tensor of
0 elements"; on every way in: the generator's `generate`, `chat_prompts` (the system prompt too), the CLI."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from deploykit.cli import app
from deploykit.errors import UserError
from deploykit.llm.generate import TorchGenerator, chat_prompts
from deploykit.llm.llama_cpp_gen import LlamaCppGenerator

runner = CliRunner()
SURROGATE = "bad \udcff byte"  # what Python makes of the argument b"bad \xff byte"


@pytest.fixture(scope="module")
def gen(tiny_llama):
    return TorchGenerator(tiny_llama)


@pytest.mark.parametrize("prompts, message", [
    ("", "the prompt is an empty text"), ([""], "the prompt is an empty text"),
    (["a film", " \u200b"], "prompt 1 is an empty text"),
    (SURROGATE, r"the prompt 'bad \\udcff byte' is not valid Unicode text \(a lone surrogate at character 4\)"),
    (["a film", SURROGATE], "prompt 1 'bad .* is not valid Unicode text")])
def test_generate_refuses_blank_and_invalid_text(gen, prompts, message):
    with pytest.raises(UserError, match=message):
        gen.generate(prompts, 3)


def test_chat_prompts_checks_user_turns_and_the_system_prompt(gen):
    # a chat template wraps an empty turn in tokens of its own: the check must come before it renders
    with pytest.raises(UserError, match="the prompt is an empty text"):
        chat_prompts(gen.tokenizer, [""])
    with pytest.raises(UserError, match="the system prompt 'sys .* is not valid Unicode text"):
        chat_prompts(gen.tokenizer, ["hi"], system="sys \udcff")
    with pytest.raises(UserError, match="the system prompt is an empty text"):
        chat_prompts(gen.tokenizer, ["hi"], system=" \u200b")
    assert chat_prompts(gen.tokenizer, ["hi"], system="") == chat_prompts(gen.tokenizer, ["hi"])  # "": no system turn


def test_llama_cpp_generator_checks_the_same(gen):
    cpp = LlamaCppGenerator.__new__(LlamaCppGenerator)  # no llama.cpp needed: the check comes before it runs
    cpp.tokenizer, cpp.config = gen.tokenizer, gen.config
    with pytest.raises(UserError, match="the prompt is an empty text"):
        cpp.generate([""], 3)
    with pytest.raises(UserError, match="max_new_tokens=0 must be an integer of at least 1"):
        cpp.generate(["a"], 0)


@pytest.mark.parametrize("args", [["generate", SURROGATE], ["generate", "--raw", SURROGATE],
                                  ["generate", "--system", "sys \udcff", "hi"],
                                  ["predict", "--generate", "--max-new-tokens", "2", SURROGATE]])
def test_cli_refuses_invalid_text_in_one_line(tiny_llama, args):
    result = runner.invoke(app, [args[0], str(tiny_llama), *args[1:]])
    assert result.exit_code == 2, result.output
    assert "is not valid Unicode text (a lone surrogate at character 4)" in result.output
    assert "TypeError" not in result.output
