"""The prompt cache: chat turns and tool rounds continue from earlier generations' caches and give
exactly the tokens a full prefill gives, on every backend; traces, interventions, threads, aborted
streams and the memory bound behave."""
from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
from selection import ALL_BACKENDS, BACKENDS, gguf_copy

import workbench
from workbench import Intervention, Trace, WorkbenchError
from workbench.demo_tools import TOOLS
from workbench.prompt_cache import PromptCache

# Held-out requests (not the training generator's phrasing), thinking off and on, with tool rounds.
TURNS = [(False, "Could you check the weather for Lisbon?"), (False, "And over in Tokyo?"),
         (True, "What is 12 times 7?"), (True, "Thanks! Now write a short poem about rain."),
         (False, "Convert 3 km to miles, please.")]


@pytest.fixture(scope="module", params=[b for b in ALL_BACKENDS if b in BACKENDS])
def model(request):
    if request.param == "llamacpp":
        gguf_copy("F32")
        return workbench.load("tiny:F32")
    return workbench.load("tiny", backend=request.param, device="cpu")


def _conversation(model, reuse: bool):
    model.prompt_cache.clear()
    messages, out = [], []
    for thinking, text in TURNS:
        messages = messages + [{"role": "user", "content": text}]
        result = model.chat(messages, tools=TOOLS, thinking=thinking, temperature=0, max_new_tokens=48,
                            prompt_cache=reuse)
        out.append(result)
        messages = result.messages
    return out


def test_a_conversation_with_reuse_equals_full_prefill_token_for_token(model):
    full = _conversation(model, reuse=False)
    reused = _conversation(model, reuse=True)
    for a, b in zip(full, reused):
        assert [g.token_ids.tolist() for g in a.generations] == [g.token_ids.tolist() for g in b.generations]
        assert a.text == b.text and a.calls == b.calls
    # (Continuing a reply exactly, whatever the model writes, is checked by the stopped-generation test.)
    gens = [g for r in reused for g in r.generations]
    assert gens[0].stats.reused_prompt_tokens == 0
    assert all(g.stats.reused_prompt_tokens > 0 for g in gens[1:])
    for g in gens[1:]:  # what is read again: the last reply and the new message, not the history
        assert g.stats.prompt_tokens - g.stats.reused_prompt_tokens < 150
    assert all(g.stats.reused_prompt_tokens == 0 for r in full for g in r.generations)


def test_a_request_that_does_not_match_reuses_nothing(model):
    model.prompt_cache.clear()
    chat = [{"role": "user", "content": "Could you check the weather for Lisbon?"}]
    model.generate(chat, max_new_tokens=8, thinking=False, prompt_cache=True)
    other = model.generate("def fibonacci(n):", max_new_tokens=16, prompt_cache=True)
    plain = model.generate("def fibonacci(n):", max_new_tokens=16)
    assert other.stats.reused_prompt_tokens == 0 and other.token_ids.tolist() == plain.token_ids.tolist()
    again = model.generate(chat, max_new_tokens=8, thinking=False, prompt_cache=True)
    assert again.stats.reused_prompt_tokens > 0  # the turn-start entry of the same chat


def test_traces_and_interventions_neither_use_nor_fill_the_cache(model):
    chat = [{"role": "user", "content": "Could you check the weather for Lisbon?"}]
    model.prompt_cache.clear()
    model.generate(chat, max_new_tokens=8, thinking=False, prompt_cache=True)
    entries = model.prompt_cache.entries()
    traced = model.generate(chat, max_new_tokens=8, thinking=False, prompt_cache=True, trace=Trace(routing=True))
    assert traced.stats.reused_prompt_tokens == 0
    assert traced.routing.n_tokens == len(traced.prompt_ids) + len(traced.token_ids) - 1  # every token recorded
    assert model.prompt_cache.entries() == entries
    if model.engine.intervenes:
        changed = model.generate(chat, max_new_tokens=8, thinking=False, prompt_cache=True,
                                 intervene=Intervention(disable={model.spec.moe_layers[0]: [0, 1, 2]}))
        assert changed.stats.reused_prompt_tokens == 0 and model.prompt_cache.entries() == entries


def test_a_stopped_generation_is_continued_exactly(model):
    model.prompt_cache.clear()
    chat = [{"role": "user", "content": "Write a long story about a lighthouse."}]
    stream = model.stream(chat, max_new_tokens=200, thinking=False, prompt_cache=True)
    for i, _ in enumerate(stream):
        if i == 5:
            stream.stop()
    cut = stream.generation
    assert cut.finish_reason == "interrupted"
    # The stopped reply, then more text (a request must read at least one new token to predict the next).
    ids = np.concatenate([cut.prompt_ids, cut.token_ids, model.encode(" and then")])
    cont = model.generate(ids, max_new_tokens=12, prompt_cache=True)
    full = model.generate(ids, max_new_tokens=12)
    assert cont.stats.reused_prompt_tokens > len(cut.prompt_ids)
    assert cont.token_ids.tolist() == full.token_ids.tolist()


def test_an_abandoned_stream_stores_nothing_and_breaks_nothing(model):
    model.prompt_cache.clear()
    chat = [{"role": "user", "content": "Could you check the weather for Lisbon?"}]
    chunks = iter(model.stream(chat, max_new_tokens=40, thinking=False, prompt_cache=True))
    next(chunks)
    del chunks
    gc.collect()
    kinds = [k for k, _, _ in model.prompt_cache.entries()]
    assert "generation end" not in kinds
    a = model.generate(chat, max_new_tokens=12, thinking=False, prompt_cache=True)
    b = model.generate(chat, max_new_tokens=12, thinking=False)
    assert a.token_ids.tolist() == b.token_ids.tolist()


def test_two_threads_chatting_on_one_model_share_no_cache(model):
    model.prompt_cache.clear()
    first = [{"role": "user", "content": "Could you check the weather for Lisbon?"}]
    second = [{"role": "user", "content": "What is 12 times 7?"}]
    want = [model.chat(m, tools=TOOLS, thinking=False, temperature=0, max_new_tokens=40, prompt_cache=False).text
            for m in (first, second)]
    got, errors = {}, []

    def run(i, messages):
        try:
            for _ in range(2):
                got[i] = model.chat(messages, tools=TOOLS, thinking=False, temperature=0, max_new_tokens=40).text
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, m)) for i, m in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors and [got[0], got[1]] == want


def test_the_bound_the_switch_and_bad_settings(model):
    store = model.prompt_cache
    store.clear()
    store.max_entries = 2
    try:
        _conversation(model, reuse=True)
        assert len(store) <= 2
        store.max_bytes = 1
        store.clear()
        model.chat([{"role": "user", "content": "Hi"}], thinking=False, max_new_tokens=4)
        assert len(store) == 0  # each snapshot alone is over the budget: nothing kept
    finally:
        store.max_entries, store.max_bytes = 8, 1 << 30
    store.enabled = False
    try:
        chat = [{"role": "user", "content": "Hi"}]
        model.chat(chat, thinking=False, max_new_tokens=4)
        assert model.generate(chat, thinking=False, max_new_tokens=4, prompt_cache=True).stats.reused_prompt_tokens == 0
        assert len(store) == 0
    finally:
        store.enabled = True
    with pytest.raises(WorkbenchError, match="max_entries"):
        PromptCache(max_entries=-1)
    assert "entries" in repr(store)


def test_llamacpp_snapshots_hold_no_sequence():
    gguf_copy("F32")
    m = workbench.load("tiny:F32")
    _conversation(m, reuse=True)
    assert len(m.prompt_cache) > 0
    gc.collect()
    streams = [m.stream("def f(x):", max_new_tokens=2) for _ in range(4)]  # all four sequences still free
    for s in streams:
        for _ in s:
            pass


def test_chat_and_the_chat_panel_use_it_by_default(model):
    from workbench.widgets.chat import ChatPanel

    model.prompt_cache.clear()
    first = model.chat([{"role": "user", "content": "Hello!"}], thinking=False, max_new_tokens=12)
    second = model.chat(first.messages + [{"role": "user", "content": "And then?"}], thinking=False,
                        max_new_tokens=12)
    assert second.generations[0].stats.reused_prompt_tokens > 0
    panel = ChatPanel(model, tools=TOOLS)
    panel.temperature.value = 0
    for text in ("Could you check the weather for Lisbon?", "And over in Tokyo?"):
        panel.send(text)
        panel.wait(120)
    assert panel.last_result.generations[0].stats.reused_prompt_tokens > 0


def test_torch_fast_decode_path_keeps_and_continues_its_static_cache():
    """torch's fast path (a static cache, the default on CUDA): snapshots copy the decoder's buffers,
    and a hit is loaded back into a leased decoder's own buffers, so decoding stays on the fast path."""
    if "torch" not in BACKENDS:
        pytest.skip("torch is not selected")
    model = workbench.load("tiny", backend="torch", device="cpu")
    model.fast_decode = True
    full = _conversation(model, reuse=False)
    reused = _conversation(model, reuse=True)
    for a, b in zip(full, reused):
        assert [g.token_ids.tolist() for g in a.generations] == [g.token_ids.tolist() for g in b.generations]
    gens = [g for r in reused for g in r.generations]
    assert all(g.stats.reused_prompt_tokens > 0 for g in gens[1:])
    assert all(g.stats.decode_path.startswith("static cache") for g in gens)
