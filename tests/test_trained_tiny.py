"""The default model `tiny` is really trained (scripts/train_tiny): it is what `workbench.load()`
gives, both backends agree on it, the tool loop works with it end to end on requests written here
(not drawn from the training data's generator), and code and chat tokens prefer different experts."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

import workbench
from workbench import Trace
from workbench.analysis.routing import compare_loads
from workbench.demo_tools import TOOLS, WEATHER, calculator, convert_units
from workbench.hub import CHECKPOINTS

# Requests in wordings of this file's own; the arguments the call must carry.
REQUESTS = [
    ("Hi, could you check the weather in Berlin for me?", "get_weather", {"city": "Berlin"}),
    ("What's the weather like in Tokyo?", "get_weather", {"city": "Tokyo"}),
    ("Please compute 45 * 12.", "calculator", {"expression": "45 * 12"}),
    ("What is 300 - 123?", "calculator", {"expression": "300 - 123"}),
    ("Convert 10 km to miles.", "convert_units", {"value": 10, "from_unit": "km", "to_unit": "mi"}),
]


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
    assert evaluation["tool_use"]["correct_call"] >= 0.8
    assert f"**{100 * evaluation['tool_use']['correct_call']:.0f}%**" in card
    assert evaluation["code"]["perplexity"] < evaluation["code"]["unigram_perplexity"] / 4
    assert evaluation["chat"]["perplexity"] < evaluation["chat"]["unigram_perplexity"] / 4
    assert training["minutes"] <= 65 and training["seed"] == 2026
    assert sum(f.stat().st_size for f in model.path.iterdir()) < 40e6


def test_both_backends_agree(trained):
    ids = trained["torch"].encode("def area(width, height):\n    return width * height\n")
    np.testing.assert_allclose(trained["torch"].logits(ids), trained["mlx"].logits(ids), atol=1e-3)
    prompt = [{"role": "user", "content": "What is the capital of Norway?"}]
    a, b = (trained[x].generate(prompt, max_new_tokens=24, thinking=False) for x in ("torch", "mlx"))
    np.testing.assert_array_equal(a.token_ids, b.token_ids)
    assert "Oslo" in a.text


def expected_result(name: str, args: dict) -> str:
    if name == "get_weather":
        sky, celsius = WEATHER[args["city"]]
        return json.dumps({"city": args["city"], "sky": sky, "celsius": celsius})
    if name == "calculator":
        return calculator(args["expression"])
    return convert_units(float(args["value"]), args["from_unit"], args["to_unit"])


def test_the_tool_loop_end_to_end(trained):
    model = trained["torch"]
    right, answered = 0, 0
    for text, name, args in REQUESTS:
        result = model.chat([{"role": "user", "content": text}], tools=TOOLS, max_rounds=2, max_new_tokens=64)
        roles = [m["role"] for m in result.messages]
        if result.calls and result.calls[0][0].name == name and result.calls[0][1] == expected_result(name, args):
            right += 1
            assert roles[:3] == ["user", "assistant", "tool"]
            value = json.loads(result.calls[0][1])
            needles = [value["sky"], str(value["celsius"])] if isinstance(value, dict) else [result.calls[0][1]]
            answered += all(n in result.text for n in needles)
    assert right >= 4, f"{right}/{len(REQUESTS)} right calls"
    assert answered >= 3, f"{answered}/{right} answers carry the tool's result"


def test_the_same_call_on_mlx(trained):
    text, name, args = REQUESTS[0]
    result = trained["mlx"].chat([{"role": "user", "content": text}], tools=TOOLS, max_rounds=1, max_new_tokens=64)
    assert result.calls and result.calls[0][0].name == name and result.calls[0][0].arguments == args


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
