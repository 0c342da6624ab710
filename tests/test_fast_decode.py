"""The torch backend's fast decode path (static cache; CUDA graph replay on CUDA) gives what the
reference path (transformers' DynamicCache) gives: same greedy tokens, same logits in float32."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import workbench  # noqa: E402
from workbench import Trace  # noqa: E402
from workbench.backends.torch_static import MIN_CAPACITY, bucket  # noqa: E402
from workbench.errors import WorkbenchError  # noqa: E402


@contextlib.contextmanager
def fast(model, on: bool):
    before = model.fast_decode
    model.fast_decode = on
    try:
        yield model
    finally:
        model.fast_decode = before


@pytest.fixture(scope="module", autouse=True)
def fast_path_on(tiny_pair, dense_pair):
    """On a CPU the fast path is off by default (no faster there); these tests switch it on."""
    models = [tiny_pair["torch"], dense_pair["torch"]]
    for m in models:
        m.fast_decode = True
    yield
    for m in models:
        m.fast_decode = False


@pytest.fixture(scope="module", params=["tiny-random", "dense"])
def model(request, tiny_pair, dense_pair):
    return (tiny_pair if request.param == "tiny-random" else dense_pair)["torch"]


def teacher_forced(engine, ids: np.ndarray, prompt: int, fast_path: bool) -> np.ndarray:
    """Logits `[step, vocab]` after the prompt and after each following token, fed one by one."""
    cache = engine.new_cache(capacity=len(ids), fast=fast_path)
    out = [engine.to_numpy(engine.forward(ids[:prompt], cache))]
    for t in ids[prompt:-1]:
        out.append(engine.to_numpy(engine.forward(torch.tensor(int(t)), cache)))
    return np.stack(out)


def test_off_by_default_on_a_cpu_and_reported(model):
    fresh = workbench.load(model.path, backend="torch", device="cpu")
    assert fresh.fast_decode is False and fresh.kernels["decode"].startswith("transformers DynamicCache")
    assert fresh.generate("Hello", max_new_tokens=4).stats.decode_path.startswith("transformers DynamicCache")
    assert model.fast_decode  # switched on for this module
    assert model.kernels["decode"] == "static cache, eager step"
    assert model.generate("Hello", max_new_tokens=4).stats.decode_path == "static cache, eager step"


def test_same_greedy_tokens_as_the_reference_path(model):
    prompt = [{"role": "user", "content": "Write a haiku about experts."}]
    with fast(model, False):
        ref = model.generate(prompt, max_new_tokens=48, ignore_eos=True)
    got = model.generate(prompt, max_new_tokens=48, ignore_eos=True)
    assert ref.stats.decode_path.startswith("transformers DynamicCache")
    np.testing.assert_array_equal(got.token_ids, ref.token_ids)
    assert got.text == ref.text


def test_same_logits_step_by_step(model):
    ids = np.random.default_rng(0).integers(0, model.spec.vocab_size, size=40)
    fast_logits = teacher_forced(model.engine, ids, 24, True)
    ref_logits = teacher_forced(model.engine, ids, 24, False)
    np.testing.assert_allclose(fast_logits, ref_logits, atol=2e-5, rtol=0)


def test_chunked_prefill_continues_the_cache(model):
    """The throughput harness prefills a depth, then a prompt, then decodes: the static cache
    takes several multi-token forwards in a row, as the dynamic one does."""
    engine = model.engine
    ids = np.random.default_rng(1).integers(0, model.spec.vocab_size, size=30)
    results = []
    for fast_path in (True, False):
        cache = engine.new_cache(capacity=40, fast=fast_path)
        engine.forward(ids[:10], cache)
        engine.forward(ids[10:25], cache)
        logits = [engine.to_numpy(engine.forward(ids[25:26], cache))]
        for t in ids[26:]:
            logits.append(engine.to_numpy(engine.forward(torch.tensor(int(t)), cache)))
        results.append(np.stack(logits))
    np.testing.assert_allclose(results[0], results[1], atol=2e-5, rtol=0)


def test_decoders_are_reused_but_never_shared(tiny_pair):
    engine = tiny_pair["torch"].engine
    first = engine.new_cache(capacity=50)
    second = engine.new_cache(capacity=50)  # the first is still held: a decoder of its own
    assert first.decoder is not second.decoder
    held = first.decoder
    del first
    third = engine.new_cache(capacity=50)
    assert third.decoder is held
    assert third.decoder.length == 0 and int(third.decoder.position) == 0


def test_a_second_generation_starts_from_an_empty_cache(tiny_pair):
    model = tiny_pair["torch"]
    a = model.generate("The router", max_new_tokens=20, ignore_eos=True)
    model.generate("Something else entirely, and longer than before.", max_new_tokens=30, ignore_eos=True)
    b = model.generate("The router", max_new_tokens=20, ignore_eos=True)
    np.testing.assert_array_equal(a.token_ids, b.token_ids)


def test_tracing_takes_the_reference_path_and_says_so(tiny_pair):
    model = tiny_pair["torch"]
    traced = model.generate("Route me", max_new_tokens=8, ignore_eos=True, trace=Trace(routing=True))
    plain = model.generate("Route me", max_new_tokens=8, ignore_eos=True)
    assert traced.stats.decode_path.startswith("transformers DynamicCache")
    assert plain.stats.decode_path == "static cache, eager step"
    np.testing.assert_array_equal(traced.token_ids, plain.token_ids)
    assert traced.routing.experts.shape[1] == len(traced.prompt_ids) + len(traced.token_ids) - 1


def test_capacity_is_bucketed_and_overflow_is_refused(tiny_pair):
    assert bucket(10, 10_000) == MIN_CAPACITY
    assert bucket(MIN_CAPACITY + 1, 10_000) == 2 * MIN_CAPACITY
    assert bucket(5000, 4096) == 5000  # past the context limit only what is asked
    engine = tiny_pair["torch"].engine
    cache = engine.new_cache(capacity=4)
    engine.forward(np.arange(cache.decoder.capacity - 1), cache)
    engine.forward(np.arange(1), cache)
    with pytest.raises(RuntimeError, match="static cache of .* tokens is full"):
        engine.forward(np.arange(1), cache)


def test_the_switch(tiny_pair):
    model = tiny_pair["torch"]
    with fast(model, False):
        assert model.kernels["decode"].startswith("transformers DynamicCache")
    mlx = tiny_pair["mlx"]
    assert not mlx.fast_decode
    assert mlx.kernels["decode"].startswith("mlx-lm cache")
    with pytest.raises(WorkbenchError, match="no fast decode path"):
        mlx.fast_decode = True
    assert workbench.Stats.__dataclass_fields__["decode_path"].default == ""
