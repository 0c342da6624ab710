"""The default model `tiny` is really trained (scripts/train_tiny): it is what `workbench.load()`
gives, both backends agree on it, its card's figures are what the checkpoint does (the tool loop
end to end on the hand-written requests, which training never saw), and code and chat tokens
prefer different experts."""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

import workbench
from workbench import Trace
from workbench.analysis.routing import compare_loads
from workbench.demo_tools import TOOLS
from workbench.hub import CHECKPOINTS
from workbench.tools import ToolBox, parse_tool_calls

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "train_tiny"))
import data  # noqa: E402
from evaluate import right_call  # noqa: E402


@pytest.fixture(scope="module")
def trained():
    return {b: workbench.load(backend=b, device="cpu") for b in ("torch", "mlx")}


def test_is_the_default_and_ships_its_card(trained):
    model = trained["torch"]
    assert model.path == CHECKPOINTS / "tiny"
    assert model.spec.is_moe and model.spec.num_layers == 8
    evaluation = json.loads((model.path / "evaluation.json").read_text())
    training = json.loads((model.path / "training.json").read_text())
    card = (model.path / "README.md").read_text()
    for split in ("phrasing", "handwritten", "handwritten_thinking"):
        figure, before = (e["tool_use"][split]["correct_call"] for e in (evaluation, evaluation["before"]))
        assert figure > before, (split, figure, before)  # better than the first release on the same requests
        assert f"**{100 * figure:.0f}%**" in card
    assert evaluation["code"]["perplexity"] < evaluation["code"]["unigram_perplexity"] / 4
    assert evaluation["chat"]["perplexity"] < evaluation["chat"]["unigram_perplexity"] / 4
    before = evaluation["before"]  # the stage-1 checkpoint on the same tokens: no worse on either
    assert evaluation["code"]["perplexity"] <= before["code"]["perplexity"] * 1.05
    assert evaluation["chat"]["perplexity"] <= before["chat"]["perplexity"]
    assert training["minutes"] <= 65 and training["seed"] == 2026 and training["init"]["minutes"] <= 65
    assert sum(f.stat().st_size for f in model.path.iterdir()) < 40e6


def test_both_backends_agree(trained):
    ids = trained["torch"].encode("def area(width, height):\n    return width * height\n")
    np.testing.assert_allclose(trained["torch"].logits(ids), trained["mlx"].logits(ids), atol=1e-3)
    prompt = [{"role": "user", "content": "What is the capital of Norway?"}]
    a, b = (trained[x].generate(prompt, max_new_tokens=24, thinking=False) for x in ("torch", "mlx"))
    np.testing.assert_array_equal(a.token_ids, b.token_ids)
    assert "Oslo" in a.text


def test_the_tool_loop_end_to_end(trained):
    """Four hand-written requests per tool and four that need no tool, through model.chat with the
    demo tools: the card's criterion gives what the card recorded for them (greedy decoding is
    deterministic; one request may differ, for a near-tie another CPU breaks the other way), and a
    right call's answer carries the tool's result."""
    model, box = trained["torch"], ToolBox(TOOLS)
    recorded = json.loads((model.path / "evaluation.json").read_text())["tool_use"]["handwritten"]
    missed = {m["request"] for m in recorded["misses"]}
    requests = data.handwritten_requests()
    picked = [r for kind in ("calculator", "get_weather", "convert_units") for r in
              [r for r in requests if r.name == kind][:4]] + [r for r in requests if r.name is None][:4]
    differ, answered, called = [], 0, 0
    for req in picked:
        result = model.chat([{"role": "user", "content": req.text}], tools=TOOLS, max_rounds=1, max_new_tokens=96)
        _, calls = parse_tool_calls(result.generations[0].text)
        right = right_call(box, calls, req)
        if right == (req.text in missed):
            differ.append((req.text, result.generations[0].text))
        if not right:
            continue
        if req.name is None:
            assert not result.calls and result.text
            continue
        called += 1
        assert [m["role"] for m in result.messages[:3]] == ["user", "assistant", "tool"]
        value = json.loads(result.calls[0][1]) if result.calls[0][1].startswith("{") else result.calls[0][1]
        needles = [value["sky"], str(value["celsius"])] if isinstance(value, dict) else [value]
        answered += all(n in result.text for n in needles)
    assert len(differ) <= 1, differ
    assert called >= 6 and answered >= called - 1, f"{answered}/{called} answers carry the tool's result"


def test_the_same_call_on_mlx(trained):
    req = next(r for r in data.handwritten_requests() if r.name == "get_weather")
    torch_reply = trained["torch"].chat([{"role": "user", "content": req.text}], tools=TOOLS, max_rounds=0)
    mlx_reply = trained["mlx"].chat([{"role": "user", "content": req.text}], tools=TOOLS, max_rounds=0)
    assert mlx_reply.generations[0].token_ids.tolist() == torch_reply.generations[0].token_ids.tolist()


def test_code_and_chat_prefer_different_experts(trained):
    model = trained["torch"]
    import inspect
    import json as json_module
    import random as random_module
    sources = [inspect.getsource(m)[:1500] for m in (json_module, random_module, inspect)]
    chats = [model.apply_chat_template([{"role": "user", "content": q}], enable_thinking=False)
             for q in ("Hello!", "Who are you?", "What is the capital of Spain?", "Is 7 larger than 3?")]

    def traces(texts):
        return [model.generate(t, max_new_tokens=1, trace=Trace(routing=True)).routing for t in texts]

    code, chat = traces(sources), traces(chats)
    between = compare_loads(code, chat).jsd
    rng = random.Random(0)
    halves = code[:]
    rng.shuffle(halves)
    within = compare_loads(halves[:1], halves[1:]).jsd
    assert (between > within).sum() >= len(between) - 1, (between, within)


def test_its_mtp_layer_drafts_what_the_card_says(trained):
    """The card's acceptance comes from greedy speculative runs on held-out prompts: the first of
    them, run again, accept drafts at the rate the card reports (within the spread of a subset)."""
    import train_mtp

    model = trained["torch"]
    assert model.has_mtp
    rounds = json.loads((model.path / "training.json").read_text())["mtp"]["rounds"]
    record = rounds[-1]["held_out_acceptance"]["after"]
    card = (model.path / "README.md").read_text()
    shares = " / ".join(f"{100 * x:.0f}%" for x in record["conversations"]["acceptance_by_position"])
    assert f"| after run {len(rounds)} | conversations ({record['conversations']['prompts']} prompts) | {shares} |" in card
    prompts = train_mtp.held_out_prompts(record["conversations"]["prompts"])["conversations"][:8]
    again = train_mtp.acceptance(model, prompts)
    first = again["accepted_by_position"][0] / again["proposed_by_position"][0]
    assert abs(first - record["conversations"]["acceptance_by_position"][0]) < 0.15
    assert again["tokens_per_verify"] > 1.1
