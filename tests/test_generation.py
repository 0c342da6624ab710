"""The decode loop: sampling, seeds, stops, streaming, thinking, stats — on both backends."""
import numpy as np
import pytest

from workbench.hub import CHECKPOINTS
from workbench.sampling import SamplingParams
from workbench.tokenizer import StreamDecoder, Tokenizer

CHAT = [{"role": "user", "content": "What is 2 + 2?"}]


def test_generate_returns_a_full_generation(tiny):
    g = tiny.generate("import os\n", max_new_tokens=12)
    assert g.finish_reason in ("length", "stop")
    assert g.token_ids.dtype == np.int64 and g.prompt_ids.dtype == np.int64
    assert g.stats.prompt_tokens == len(g.prompt_ids) == len(tiny.encode("import os\n"))
    assert g.stats.new_tokens == len(g.token_ids) <= 12
    assert g.stats.time_to_first_token_s > 0 and g.stats.prefill_tokens_per_s > 0
    assert g.stats.decode_tokens_per_s > 0 and g.stats.peak_memory_bytes > 0
    assert g.text == tiny.decode(g.token_ids)  # no EOS here, so the text is all the tokens
    assert g.thinking is None


def test_greedy_is_deterministic_and_prompt_forms_agree(tiny):
    a = tiny.generate("x = 1\n", max_new_tokens=10)
    b = tiny.generate(tiny.encode("x = 1\n"), max_new_tokens=10)
    np.testing.assert_array_equal(a.token_ids, b.token_ids)


def test_same_seed_same_output_different_seed_differs(tiny):
    kw = dict(max_new_tokens=24, temperature=1.0, top_p=0.95, top_k=50, min_p=0.01, presence_penalty=0.5)
    a = tiny.generate("class ", seed=7, **kw)
    b = tiny.generate("class ", seed=7, **kw)
    c = tiny.generate("class ", seed=8, **kw)
    np.testing.assert_array_equal(a.token_ids, b.token_ids)
    assert not np.array_equal(a.token_ids, c.token_ids)


@pytest.mark.parametrize("backend", ["torch", "mlx"])
def test_eos_stops_unless_ignored(dense_pair, backend):
    model = dense_pair[backend]
    prompt = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
    stopped = model.generate(prompt, max_new_tokens=80)  # this model ends this prompt early
    assert stopped.finish_reason == "stop" and stopped.token_ids[-1] in model.tokenizer.eos_token_ids
    assert stopped.stats.new_tokens < 80
    g = model.generate(prompt, max_new_tokens=80, ignore_eos=True)
    assert g.finish_reason == "length" and g.stats.new_tokens == 80
    np.testing.assert_array_equal(g.token_ids[:len(stopped.token_ids)], stopped.token_ids)


def test_top_k_1_is_greedy(tiny):
    greedy = tiny.generate("def ", max_new_tokens=10)
    sampled = tiny.generate("def ", max_new_tokens=10, temperature=1.0, top_k=1, seed=3)
    np.testing.assert_array_equal(greedy.token_ids, sampled.token_ids)


def test_presence_penalty_discourages_repeats(tiny):
    plain = tiny.generate("the the the", max_new_tokens=40)
    penalised = tiny.generate("the the the", max_new_tokens=40, presence_penalty=2.0)
    assert len(set(penalised.token_ids.tolist())) >= len(set(plain.token_ids.tolist()))
    assert len(set(penalised.token_ids.tolist())) == len(penalised.token_ids)  # greedy + max penalty


def test_stop_string_cuts_the_text(tiny):
    full = tiny.generate("def ", max_new_tokens=30)
    assert len(full.text) > 6
    stop = full.text[3:6]
    g = tiny.generate("def ", max_new_tokens=30, stop=[stop])
    assert g.finish_reason == "stop"
    assert g.text == full.text[:full.text.find(stop)]
    assert stop not in g.text


def test_stream_yields_what_generate_returns(tiny):
    stream = tiny.stream("import ", max_new_tokens=20)
    pieces = list(stream)
    assert "".join(pieces) == stream.generation.raw_text == tiny.generate("import ", max_new_tokens=20).raw_text
    assert all(p for p in pieces)
    counts = [p.tokens for p in pieces]  # the generation's tokens so far: what a meter counts by
    assert counts == sorted(counts) and counts[0] >= 1 and counts[-1] == len(stream.generation.token_ids)


def test_stream_stop_interrupts_and_model_stays_usable(tiny):
    stream = tiny.stream("import ", max_new_tokens=50)
    for i, _ in enumerate(stream):
        if i == 2:
            stream.stop()
    assert stream.generation.finish_reason == "interrupted"
    assert stream.generation.stats.new_tokens <= 4
    assert tiny.generate("import ", max_new_tokens=5).stats.new_tokens == 5


def test_chat_with_thinking_comes_back_apart(tiny):
    g = tiny.generate(CHAT, max_new_tokens=16, thinking=True)
    assert g.thinking is not None  # prompt opened <think>; everything before </think> is thinking
    assert tiny.decode(g.prompt_ids).endswith("<|im_start|>assistant\n<think>\n")
    off = tiny.generate(CHAT, max_new_tokens=16, thinking=False)
    assert off.thinking is None and off.text == off.raw_text
    assert tiny.decode(off.prompt_ids).endswith("<think>\n\n</think>\n\n")


def test_streamed_chunks_are_labelled_thinking(tiny):
    stream = tiny.stream(CHAT, max_new_tokens=8, thinking=True)
    chunks = list(stream)
    assert chunks and all(c.thinking for c in chunks) == ("</think>" not in stream.generation.raw_text)


def test_max_new_tokens_is_clamped_to_the_context(tiny):
    ids = np.full(tiny.context_length - 3, tiny.encode("a")[0])
    g = tiny.generate(ids[:-1], max_new_tokens=50)  # room for 4 new tokens
    assert g.stats.new_tokens <= 4 and g.finish_reason in ("length", "stop")


def test_stream_decoder_never_splits_a_character():
    tok = Tokenizer(CHECKPOINTS / "tiny-random")
    text = "naïve café — 世界 🙂 ok"
    ids = tok.encode(text)
    assert len(ids) > len(text.split())  # multi-byte characters span several byte-level tokens
    decoder = StreamDecoder(tok)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


@pytest.mark.parametrize("kw,match", [
    (dict(temperature=-1), "temperature"), (dict(temperature=float("nan")), "temperature"),
    (dict(top_p=0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(top_k=-1), "top_k"),
    (dict(top_k=2.5), "top_k"), (dict(min_p=1), "min_p"), (dict(presence_penalty=3), "presence_penalty"),
    (dict(seed=-2), "seed"),
])
def test_invalid_sampling_values_are_refused(kw, match):
    from workbench.errors import WorkbenchError
    with pytest.raises(WorkbenchError, match=match):
        SamplingParams(**kw)
