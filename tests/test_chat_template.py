"""The bundled chat template renders what the released Qwen3.5 template renders.

tests/data/qwen3_5_chat_renders.json holds conversations and the text the released template
(Qwen3.5-4B, as vendored by llama.cpp) produced for them.
"""
import json
from pathlib import Path

import pytest

from workbench.errors import WorkbenchError
from workbench.hub import CHECKPOINTS
from workbench.thinking import ThinkingTracker, prompt_opens_thinking, split_thinking
from workbench.tokenizer import Tokenizer

CASES = json.loads((Path(__file__).parent / "data" / "qwen3_5_chat_renders.json").read_text())


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(CHECKPOINTS / "tiny-random")


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_renders_like_the_release_template(tokenizer, case):
    text = tokenizer.apply_chat_template(case["messages"], tools=case.get("tools"),
                                         add_generation_prompt=case.get("add_generation_prompt", True),
                                         enable_thinking=case["enable_thinking"])
    assert text == case["expected"]


def test_thinking_off_inserts_an_empty_think_block(tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], enable_thinking=False)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not prompt_opens_thinking(text)
    assert prompt_opens_thinking(tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}]))


def test_special_tokens_are_single_tokens_with_release_order(tokenizer):
    names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>",
             "<think>", "</think>", "<tool_response>", "</tool_response>"]
    ids = {n: tokenizer.token_to_id(n) for n in names}
    base = ids["<|endoftext|>"]
    # Offsets as in the release (248044, 248045, 248046, 248058, 248059, 248068, 248069).
    assert [ids[n] - base for n in names[:7]] == [0, 1, 2, 14, 15, 24, 25]
    for n in names:
        assert tokenizer.encode(f"a{n}b").tolist().count(ids[n]) == 1


def test_template_errors_are_clear(tokenizer):
    with pytest.raises(WorkbenchError, match="No user query"):
        tokenizer.apply_chat_template([{"role": "system", "content": "x"}])
    with pytest.raises(WorkbenchError, match="role"):
        tokenizer.apply_chat_template([{"content": "no role"}])


def test_split_thinking():
    assert split_thinking("plan\n</think>\n\nanswer", opened=True) == ("plan", "answer")
    assert split_thinking("still thinking", opened=True) == ("still thinking", "")
    assert split_thinking("plain answer", opened=False) == (None, "plain answer")
    assert split_thinking("<think>\nx\n</think>\n\ny", opened=False) == ("x", "y")


def test_thinking_tracker_labels_stream_pieces():
    tracker = ThinkingTracker(opened=True)
    pieces = ["a", "b</think>", "\n\nc", "<think>", "d"]
    labelled = [p for piece in pieces for p in tracker.feed(piece)]
    assert labelled == [("a", True), ("b", True), ("\n\nc", False), ("d", True)]
