"""The training data of the trained tiny model (scripts/train_tiny): held-out requests never reach
training, every conversation lies whole in one row, the loss weights fall where train.py says."""
from __future__ import annotations

import hashlib
import json
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "scripts" / "train_tiny"),
                str(Path(__file__).resolve().parents[1] / "scripts")]
import data  # noqa: E402
import phrasing  # noqa: E402
import train  # noqa: E402

from workbench.demo_tools import WEATHER  # noqa: E402


def test_held_out_requests_never_reach_training():
    held = [r.text for r in data.heldout_requests(60, 2026)] + [r.text for r in data.handwritten_requests()]
    seen = "\n".join(data.conversations(600, 2026) + data.drills(600, 2028))
    assert "<tool_call>" in seen
    assert not [q for q in held if f"user\n{q}<|im_end|>" in seen]
    # the phrasing split shares no frame, opener or closer, and no city, with training
    for pools in (phrasing.OPENERS, phrasing.CLOSERS, phrasing.CALC_FRAMES, phrasing.CALC_COMMAND_FRAMES,
                  phrasing.WEATHER_FRAMES, phrasing.CONVERT_FRAMES, phrasing.CAPITAL_FRAMES,
                  *(requests for requests, _ in phrasing.SMALL_TALK.values())):
        assert not set(pools["train"]) & set(pools["heldout"])
        # (a made-up place name may spell a short filler: " Ta." is a town to copy, not a thank-you)
        assert not [f for f in pools["heldout"] if len(f.strip()) > 4 and f.strip() in seen], pools["heldout"]
    assert not set(phrasing.CITIES["train"]) & set(phrasing.CITIES["heldout"])
    assert not [c for c in phrasing.CITIES["heldout"] if f"<parameter=city>\n{c}\n" in seen]


def test_handwritten_requests_are_well_formed():
    from workbench.demo_tools import unit_code
    rows = data.handwritten_requests()
    assert len(rows) >= 50 and len({r.text for r in rows}) == len(rows)
    assert {r.name for r in rows} == {"calculator", "get_weather", "convert_units", None}
    for r in rows:
        result = data.run_tool(r.name, r.arguments) if r.name else ""
        assert "error" not in result, (r.text, result)
        if r.name == "convert_units":
            assert unit_code(r.arguments["from_unit"]) == r.arguments["from_unit"]


def test_phrasing_covers_words_and_symbols():
    rng = random.Random(0)
    texts = [phrasing.request(rng, "train", tool_share=1.0) for _ in range(3000)]
    joined = " ".join(r.text.lower() for r in texts)
    for word in ("plus", "divided by", "to the power of", "times", "squared", "percent", "kilometers",
                 "fahrenheit", "pounds", "*", "/"):
        assert word in joined, word
    cities = {r.arguments["city"] for r in texts if r.name == "get_weather"}
    assert any(" " in c for c in cities)
    made_up = [r for r in texts if r.name == "get_weather" and r.arguments["city"] not in WEATHER
               and r.arguments["city"].lower() not in {c.lower() for c in WEATHER}]
    assert 0.2 < len(made_up) / len(cities) < 0.8  # names to copy, not to recall
    for r in texts:  # every other call is one the tool answers
        if r not in made_up:
            assert "error" not in data.run_tool(r.name, r.arguments), r


def test_lists_to_add_up_are_asked_for_and_computed():
    rng = random.Random(1)
    sums = [r for r in (phrasing.request(rng, "train", tool_share=1.0) for _ in range(3000))
            if r.name == "calculator" and r.arguments["expression"].count("+") >= 2
            and any(w in r.text.lower() for w in ("add", "sum", "total", " plus "))]
    assert len(sums) > 20
    for r in sums[:40]:
        assert "error" not in data.run_tool(r.name, r.arguments), r


def test_with_thinking_the_answer_after_a_tool_response_thinks_too():
    """An empty thinking block renders as "<think>\n\n</think>", which no prompt ends in: the answer
    must be learned after "<think>\n" as a thinking prompt gives it."""
    request = phrasing.Request("Weather in Lima?", "get_weather", {"city": "Lima"})
    messages = data.exchange(random.Random(2), request, thinking=True)
    result = messages[2]["content"]
    assert messages[-1]["role"] == "assistant" and result in messages[-1]["reasoning_content"]
    text = data._render(messages, tools=data.tool_schemas(), thinking=True)
    assert "<think>\n\n</think>" not in text.split("<tool_response>")[-1]
    assert "reasoning_content" not in data.exchange(random.Random(2), request, thinking=False)[-1]


def test_drills_have_no_tools_prompt_and_conversations_do():
    drills = data.drills(50, 1)
    assert any("<tool_response>" in d for d in drills)
    assert not any("# Tools" in d for d in drills if "<tool_response>" in d)  # questions may show tools
    assert all("# Tools" in c for c in data.conversations(50, 1, tool_share=1.0))


def test_without_cities_takes_every_table_city_out():
    text = data.tool_dialogue(random.Random(3))
    out = data.without_cities(" ".join(WEATHER) + " " + text)
    assert not [c for c in WEATHER if c in out]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from tokenizers import Tokenizer
    folder = tmp_path_factory.mktemp("tok")
    chats = data.conversations(300, 5)
    train.build_tokenizer(folder, [data.without_cities(c) for c in chats], bpe_vocab=1000)
    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def test_loss_weights_fall_on_what_the_assistant_writes(tokenizer):
    request = phrasing.Request("Weather in Lima?", "get_weather", {"city": "Lima"})
    text = data._render(data.exchange(random.Random(4), request), tools=data.tool_schemas())
    eot = tokenizer.token_to_id("<|endoftext|>")
    (ids, weight), = train.encode_documents(tokenizer, [text], eot)
    tokens = tokenizer.encode(text).tokens
    system, user, header = [i for i, t in enumerate(tokens) if t == "<|im_start|>"][:3]
    call = tokens.index("<tool_call>", header)
    assert weight[call] == train.CALL_WEIGHT
    assert weight[user:header + 2].max() == 0  # the request, "<|im_start|>assistant"
    prompt = weight[system:user]  # the tools prompt: only its example call is learned (see train.py)
    assert prompt.max() == train.CALL_WEIGHT and (prompt == 0).mean() > 0.7
    assert weight[header + 3:call].min() == 1.0  # the empty thinking block before the call
    last_end = len(tokens) - 1 - tokens[::-1].index("<|im_end|>")
    assert weight[last_end] == 1.0 and weight[-1] == 1.0  # the final answer's end, then <|endoftext|>


def test_rows_hold_every_conversation_whole(tokenizer):
    eot = tokenizer.token_to_id("<|endoftext|>")
    convs = train.encode_documents(tokenizer, data.conversations(40, 6), eot)
    code = train.encode_documents(tokenizer, ["def f(x):\n    return x\n" * 3000], eot)
    rows, weights = train.pack_rows(convs, code, 1024, random.Random(0))
    assert rows.shape[1] == 1024 and weights.shape == rows.shape
    flat = [r.tobytes() for r in rows]
    for ids, _ in convs:
        assert any(ids.tobytes() in row for row in flat)  # contiguous, inside one row
    drill_rows, _ = train.pack_rows(convs, code, 1024, random.Random(0), code_rows=False)
    assert len(drill_rows) < len(rows)  # without code rows of its own
    assert np.isin(weights, [0.0, 1.0, train.CALL_WEIGHT]).all()


def test_made_up_places_are_never_table_cities_and_use_every_letter():
    """Names to copy, not to recall: never a city of the weather table (a held-out one least of
    all), nearly all distinct, and of all three kinds, so every letter occurs, not just one table's
    syllables (stage 4's held-out names came back as those syllables)."""
    rng = random.Random(0)
    names = [phrasing.made_up_city(rng) for _ in range(3000)]
    assert not set(names) & set(WEATHER)
    assert len(set(names)) > 2900
    assert set("abcdefghijklmnopqrstuvwxyz") <= {c for n in names for c in n.lower()}
    pieces = {c[:3] for c in phrasing.CITIES["train"]}
    assert sum(n[:3] in pieces for n in names) > 300  # splices begin like a training city


def test_composed_weather_frames_put_the_city_anywhere_but_never_in_a_held_out_frame():
    """The training split's composed weather frames (ask + phrase + time) are many and put the city
    before, between and after other words; none is a held-out frame, and no held-out frame's own
    words ("skies", "over", "moment") occur in them, so the phrasing split stays unseen."""
    rng = random.Random(0)
    frames = {phrasing._weather_frame(rng, "train") for _ in range(4000)}
    composed = frames - set(phrasing.WEATHER_FRAMES["train"])
    assert len(composed) > 1000
    assert not composed & set(phrasing.WEATHER_FRAMES["heldout"])
    assert {"start", "middle", "end"} <= {"start" if f.startswith("{c}") else "end" if f.rstrip(".?!").endswith("{c}")
                                          else "middle" for f in composed}
    held_words = {"over", "skies", "warm", "moment", "conditions", "look", "jacket", "pack", "walk", "report",
                  "idea", "give"}
    assert not [f for f in composed if held_words & set(f.lower().replace("?", " ").replace(".", " ").split())]
    # the held-out split is drawn as before (the card's requests stay the same): a held-out frame is
    # one choice from the held-out frames, no extra draw from the random stream
    a, b = random.Random(5), random.Random(5)
    assert phrasing._weather_frame(a, "heldout") == b.choice(phrasing.WEATHER_FRAMES["heldout"])
    assert a.random() == b.random()


def test_the_cards_retrain_commands_follow_the_recorded_stages_and_mtp_runs():
    """The model card's retrain block, from the bundled training.json: one train.py run per stage
    with that stage's minutes and rate, each from the stage before; the MTP runs before a carried
    layer on the stage they were trained against (train_mtp.py records it), the carried run taking
    that stage's layer."""
    import json

    import evaluate

    training = json.loads((Path(data.ROOT) / "workbench" / "checkpoints" / "tiny" / "training.json").read_text())
    chain = train.stages(training)
    assert len(chain) == len(evaluate.STAGES) == len(evaluate.STAGE_COMMITS)
    lines = evaluate._retrain_commands(training, chain).splitlines()
    runs = [i for i, line in enumerate(lines) if "train.py --init" in line]
    assert len(runs) == len(chain) - 1
    for i, stage in zip(runs[1:], chain[2:]):
        assert f"--minutes {stage['minutes']:.0f} " in lines[i + 1] and f"--lr {stage['lr']:g}" in lines[i + 1]
    rounds = evaluate._mtp_rounds(training)
    carried = next(i for i, m in enumerate(rounds) if m.get("head_from"))
    head_stage = rounds[carried]["head_stage"]
    mtp = [line for line in lines if "train_mtp.py" in line]
    assert len(mtp) == len(rounds)
    assert all(f"--model /tmp/stage{head_stage} " in line for line in mtp[:carried])
    assert all(f"--head-from /tmp/stage{head_stage}" in line for line in mtp[carried:])
    # the earlier MTP runs come right after the stage they trained on was made, before the next one
    made = next(i for i, line in enumerate(lines) if f"--out /tmp/stage{head_stage} " in line)
    assert lines.index(mtp[0]) == made + 2


def test_asides_go_beside_training_requests_only():
    """A training request may come with a sentence about something else (docstring sentences of the
    training code, no place among them); the held-out split never does, and draws nothing for it."""
    sentences = data.asides()
    assert len(sentences) > 300 and not [s for s in sentences if any(c in s for c in WEATHER if len(c) > 3)]
    rng = random.Random(0)
    reqs = [data.with_aside(rng, phrasing.Request("Weather in Lima?", "get_weather", {"city": "Lima"}), "train")
            for _ in range(400)]
    with_one = [r for r in reqs if r.text != "Weather in Lima?"]
    assert 80 < len(with_one) < 160 and all(r.arguments == {"city": "Lima"} for r in with_one)
    assert {r.text.startswith("Weather") for r in with_one} == {True, False}
    a, b = random.Random(1), random.Random(1)
    held = phrasing.Request("Weather in Oslo?", "get_weather", {"city": "Oslo"})
    assert data.with_aside(a, held, "heldout") is held and a.random() == b.random()


def test_list_echo_writes_each_given_word_on_its_own_line():
    """The one-per-line drill: the answer's lines are exactly the words the request lists, in order;
    none is a held-out city, and lower-case names and code words are among them."""
    rng = random.Random(0)
    held = {c.lower() for c in phrasing.CITIES["heldout"]}
    lines = []
    for _ in range(300):
        text = data.list_echo_dialogue(rng)
        request = text.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
        answer = text.split("</think>\n\n")[1].split("<|im_end|>")[0].split("\n")
        assert 2 <= len(answer) <= 5 and all(w and w in request for w in answer)
        assert request.index(answer[0]) < request.rindex(answer[-1])
        lines += answer
    assert not {w.lower() for w in lines} & held
    assert any(w.islower() and " " not in w for w in lines) and any(w in data.aside_words() for w in lines)


def test_training_names_rhyme_sometimes_and_training_asks_more_without_tools():
    """Two-word made-up names sometimes repeat or rhyme their first word ("Hong Kong"); training
    requests need no tool more often than the held-out split's, which draws as before."""
    rng = random.Random(0)
    pairs = [n.split() for n in (phrasing.made_up_city(rng) for _ in range(3000)) if len(n.split()) == 2]
    like = [a for a, b in pairs if a == b or (len(a) > 2 and a[-2:].lower() == b[-2:].lower())]
    assert 0.1 < len(like) / len(pairs) < 0.5
    rng = random.Random(1)
    train = sum(phrasing.request(rng, "train").name is None for _ in range(4000)) / 4000
    held = sum(r.name is None for r in data.heldout_requests(1000, 7)) / 1000
    assert abs(held - 0.15) < 0.04 and abs(train - 0.15 - phrasing.TRAIN_EXTRA_PLAIN) < 0.04
    assert all(phrasing.request(rng, "train", tool_share=1.0).name for _ in range(300))


def test_the_held_out_split_is_the_one_every_stage_was_measured_on():
    """The card compares stages on the same 200 requests (seed 2026); a training-data change that
    moved a draw on the held-out side would change the yardstick, not the model. Update the digest
    only with a card that says every stage was re-measured."""
    held = [[r.text, r.name, r.arguments] for r in data.heldout_requests(200, 2026)]
    digest = hashlib.sha256(json.dumps(held, sort_keys=True).encode()).hexdigest()
    assert digest == "bf4e3af682b40c37a60abdddfcbe15b1753c0b5b637c198f68f47b39089c9c22"


def test_names_of_tokenizer_pieces_make_the_rare_pieces_copy_targets():
    """Made-up names and the pieces drill write words of the bundled tokenizer's letter pieces, cut on
    a line of their own into the very pieces drawn, so that the pieces real names are cut into are
    copy targets, not just the common ones (stage 9: "des" of "Odesa" a target 24 times in all the
    data, and "Opera" came back), and none an English word the data writes on its own. In 2,000 drills
    half the inside pieces are written at least three times (measured: 55%; 28% with the pieces drill's
    share given to the other drills)."""
    tokenizer = phrasing._bundled_tokenizer()
    starts, insides = phrasing.name_pieces()
    assert {"Au", "Cal"} <= set(starts) and {"des", "stan", "eed"} <= set(insides)
    assert all(p.isascii() and p.isalpha() and 2 <= len(p) <= 4 for p in starts + insides)
    # no English word the data writes on its own: with "at" and "form" among them, names ran on
    assert not {p.lower() for p in starts + insides} & ({"at", "the", "form", "and", "can"} | set(data.aside_words()))
    rng = random.Random(0)
    cut = [tokenizer.encode("\n" + phrasing._pieces_name(rng)).tokens[1:] for _ in range(2000)]
    assert sum((c[0] in starts or len(c[0]) == 1) and all(p in insides for p in c[1:]) for c in cut) > 0.8 * len(cut)
    answers = [t.split("</think>\n\n")[-1].split("<|im_end|>")[0] for t in data.drills(2000, 3)]
    written = Counter(p for a in answers for line in a.split("\n") for p in tokenizer.encode("\n" + line).tokens[1:])
    assert sum(written[p] >= 3 for p in insides) > 0.4 * len(insides)


def test_training_names_are_followed_by_ordinary_words_the_call_leaves_out():
    """A share of training weather requests put a short function word, then up to two docstring words,
    right after the name ("How warm is Rabat at split path today?"), while the call names the city alone,
    so that the words after a name tell where it ends (stage 11: "Is Rabat cold today?" -> "Rabat ab";
    with long words only after names, "Dubai at the moment" -> "Dubai at"). The held-out split is
    untouched: its digest is pinned by test_the_held_out_split_is_the_one_every_stage_was_measured_on."""
    rng = random.Random(5)
    requests = [phrasing.weather_request(rng, "train") for _ in range(3000)]
    after = [r.text.split(r.arguments["city"], 1)[1].split() for r in requests]
    followed = sum(bool(a) and a[0].strip("?.,!") in phrasing.FUNCTION_WORDS for a in after)
    # measured: 31% (7% from the frames alone, "... at the moment", with no words put after names)
    assert 0.2 * len(requests) < followed < 0.45 * len(requests)
    # the call ends where the name does ("Port of Spain" and "Frankfurt am Main" hold such words inside)
    assert not any(r.arguments["city"].split()[-1].lower() in phrasing.FUNCTION_WORDS for r in requests)


def test_perplexity_windows_give_every_token_its_context():
    """evaluate.token_losses predicts each token with at least `context` tokens before it: windows that
    did not overlap guessed each window's first tokens from nothing, and on the held-out chats those
    positions alone made stage 12 look worse than stage 9. Checked on a bundled checkpoint against
    one forward pass over exactly the tokens before each predicted one."""
    import evaluate

    import workbench

    model = workbench.load(Path(data.ROOT) / "workbench" / "checkpoints" / "tiny-random", backend="torch",
                           device="cpu", dtype="float32")
    ids = np.random.default_rng(0).integers(0, model.spec.vocab_size, 150)
    whole = evaluate.token_losses(model, ids, window=256, context=128)
    np.testing.assert_allclose(evaluate.token_losses(model, ids), whole, atol=1e-5)  # fits one window
    strided = evaluate.token_losses(model, ids, window=40, context=30)
    assert strided.shape == whole.shape == (len(ids) - 1,)
    np.testing.assert_allclose(strided[:40], whole[:40], atol=1e-5)
    with pytest.raises(ValueError, match="less than the window"):
        evaluate.token_losses(model, ids, window=40, context=40)

    def loss_after(j: int, seen: int) -> float:  # the loss of ids[j + 1] given the `seen` tokens up to ids[j]
        return evaluate.token_losses(model, ids[j + 1 - seen:j + 2], window=seen, context=0)[-1]
    for j in (40, 41, 49, 50, 77, 148):
        assert any(abs(strided[j] - loss_after(j, seen)) < 1e-5 for seen in range(31, 41)), j
        assert abs(strided[j] - whole[j]) > 1e-6  # less context than the whole, so not the same number
