"""Speculative decoding with the checkpoint's MTP layer (torch and MLX): the output is plain decoding's,
token for token when greedy and in distribution when sampled, whatever the drafts are.

The bundled checkpoints' MTP layers are untrained, so their drafts are nearly always rejected. The
rollback after a partial acceptance is the hard part, so `OracleDrafts` proposes the plain greedy
continuation itself, wrong at chosen places: every acceptance length 0..k then occurs, and the
output must still be the plain one. Only the draft ids are replaced; the MTP layer still runs and
the verify, acceptance and rollback are the real ones.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import workbench
from workbench.errors import WorkbenchError

PROMPTS = ["def route(tokens, experts):", "The capital of France is", "import numpy as np\n\nx ="]


@pytest.fixture(scope="module", params=["torch", "mlx"])
def backend(request):
    return request.param


@pytest.fixture(scope="module")
def rand(backend):
    return workbench.load("tiny-random", backend=backend, device="cpu")


@pytest.fixture(scope="module")
def trained(backend):
    return workbench.load("tiny", backend=backend, device="cpu")


def device_array(model, values, dtype="int"):
    """`values` as the model's framework's array (what its speculation and sampler take)."""
    if model.backend == "mlx":
        import mlx.core as mx
        return mx.array(np.asarray(values), dtype=mx.int32 if dtype == "int" else mx.float32)
    import torch
    return torch.tensor(np.asarray(values), dtype=torch.long if dtype == "int" else torch.float32)


class OracleDrafts:
    """A backend's own speculation whose draft ids are the plain greedy continuation (a wrong token
    where `wrong(g, j)`: g the generated index of the token drafted after, j its draft position).
    The MTP layer still runs; only the ids it proposes are replaced."""

    def __init__(self, model, inner, plain_ids, wrong):
        self.model, self.inner, self.plain_ids, self.wrong = model, inner, plain_ids, wrong
        self.g = 0  # the index, among the generated tokens, of the last token produced

    def __getattr__(self, name):  # cache, verify, close: the backend's own
        return getattr(self.inner, name)

    def draft(self, token, k):
        self.inner.draft(token, k)
        g, plain = self.g, self.plain_ids
        ids = [plain[g + 1 + j] if g + 1 + j < len(plain) else 0 for j in range(k)]
        ids = [(t + 1) % self.model.spec.vocab_size if self.wrong(g, j) else t for j, t in enumerate(ids)]
        self.inner._drafts = device_array(self.model, ids)
        return self.inner._drafts

    def accept(self, n):
        self.inner.accept(n)
        self.g += n + 1


def oracle(model, plain_ids: list[int], wrong=lambda g, j: (5 * g + j) % 7 == 0):
    """A replacement for `model.engine.speculation` that drafts through `OracleDrafts`."""
    real = type(model.engine).speculation
    return lambda cache, probe=None: OracleDrafts(model, real(model.engine, cache, probe), plain_ids, wrong)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_greedy_equals_plain_with_every_acceptance_length(rand, monkeypatch, k):
    prompt = PROMPTS[k % len(PROMPTS)]
    plain = rand.generate(prompt, max_new_tokens=130, ignore_eos=True, speculative=0)
    monkeypatch.setattr(rand.engine, "speculation", oracle(rand, plain.token_ids.tolist()))
    spec = rand.generate(prompt, max_new_tokens=130, ignore_eos=True, speculative=k)
    assert spec.token_ids.tolist() == plain.token_ids.tolist()
    assert spec.text == plain.text
    s = spec.stats
    assert 0 < s.accepted_tokens < s.draft_tokens
    accepted = s.accepted_by_position
    assert len(accepted) == k and accepted[0] > 0 and (k == 1 or accepted[-1] > 0)
    # The prefill yields one token, every verify its accepted drafts and one more (and a last
    # step with no room for drafts one token): they add up to the output.
    assert len(spec.token_ids) - (1 + s.accepted_tokens + s.verify_steps) in (0, 1)
    assert 1.0 < s.mean_accepted_length <= k + 1


@pytest.mark.parametrize("k", [1, 3])
def test_greedy_equals_plain_with_the_checkpoints_own_drafts(rand, k):
    for prompt in PROMPTS:
        plain = rand.generate(prompt, max_new_tokens=128, ignore_eos=True, speculative=0)
        spec = rand.generate(prompt, max_new_tokens=128, ignore_eos=True, speculative=k)
        assert spec.token_ids.tolist() == plain.token_ids.tolist()
        assert spec.stats.draft_tokens > 0 and "MTP speculation" in spec.stats.decode_path


def test_chat_with_thinking_and_a_tool_call_equals_plain(trained):
    from workbench.demo_tools import calculator
    messages = [{"role": "user", "content": "What is 17 * 23?"}]
    for thinking in (False, True):
        a = trained.chat(messages, tools=[calculator], thinking=thinking, max_new_tokens=160)
        b = trained.chat(messages, tools=[calculator], thinking=thinking, max_new_tokens=160, speculative=2)
        assert [m.get("content") for m in b.messages] == [m.get("content") for m in a.messages]
        assert [(c.name, c.arguments, r) for c, r in b.calls] == [(c.name, c.arguments, r) for c, r in a.calls]
    assert a.calls, "the trained model calls the calculator here; the comparison should cover a call"


def test_stops_and_limits_behave_as_without_speculation(rand):
    plain = rand.generate(PROMPTS[0], max_new_tokens=60, ignore_eos=True, speculative=0)
    stop = plain.text[20:24]
    for kw in ({"max_new_tokens": 1}, {"max_new_tokens": 2}, {"max_new_tokens": 7}, {"stop": stop},
               {"stop": [stop, "zz"]}, {"presence_penalty": 1.5}):
        kw = {"max_new_tokens": 60, **kw}
        a = rand.generate(PROMPTS[0], ignore_eos=True, speculative=0, **kw)
        b = rand.generate(PROMPTS[0], ignore_eos=True, speculative=4, **kw)
        assert (b.text, b.finish_reason, b.token_ids.tolist()) == (a.text, a.finish_reason, a.token_ids.tolist()), kw
    # EOS: the random model ends this prompt by itself (tests/browser/test_tutorials.py)
    messages = [{"role": "user", "content": "Tell me a very long story about a cat."}]
    a = rand.generate(messages, max_new_tokens=2000, thinking=False, speculative=0)
    b = rand.generate(messages, max_new_tokens=2000, thinking=False, speculative=3)
    assert a.finish_reason == "stop" and b.token_ids.tolist() == a.token_ids.tolist()


def test_stop_mid_stream_and_abandoned_streams_leave_the_model_usable(rand):
    before = rand.generate(PROMPTS[1], max_new_tokens=40, ignore_eos=True).token_ids.tolist()
    stream = rand.stream(PROMPTS[1], max_new_tokens=200, ignore_eos=True, speculative=3)
    for n, _ in enumerate(stream):
        if n == 5:
            stream.stop()
    assert stream.generation.finish_reason == "interrupted"
    assert len(stream.generation.token_ids) <= 6 + 3  # ends within the verify step it was in
    abandoned = iter(rand.stream(PROMPTS[2], max_new_tokens=200, ignore_eos=True, speculative=2))
    next(abandoned)
    after = rand.generate(PROMPTS[1], max_new_tokens=40, ignore_eos=True, speculative=2).token_ids.tolist()
    assert after == before


def test_an_abandoned_speculating_stream_is_closed_without_waiting_for_the_model(rand):
    """The garbage collector closes an abandoned stream in whatever thread it runs, possibly one that
    holds the probe lock the model's lock holder waits for (a deadlock CI met once): closing it
    must not wait for the model's lock. The model stays usable."""
    import gc

    before = rand.generate(PROMPTS[2], max_new_tokens=24, ignore_eos=True, speculative=0).token_ids.tolist()
    abandoned = iter(rand.stream(PROMPTS[2], max_new_tokens=200, ignore_eos=True, speculative=2))
    next(abandoned)
    held, release = threading.Event(), threading.Event()

    def hold_the_model():
        with rand.engine.lock:
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold_the_model)
    holder.start()
    held.wait(60)
    dropped = threading.Event()

    def drop():
        nonlocal abandoned
        abandoned = None
        gc.collect()
        dropped.set()

    closer = threading.Thread(target=drop)
    closer.start()
    closed_in_time = dropped.wait(20)
    release.set()
    holder.join(60)
    closer.join(60)
    assert closed_in_time, "closing an abandoned stream waited for the model's lock"
    after = rand.generate(PROMPTS[2], max_new_tokens=24, ignore_eos=True, speculative=2).token_ids.tolist()
    assert after == before


def test_two_threads_speculating_on_one_model(rand):
    want = {p: rand.generate(p, max_new_tokens=48, ignore_eos=True, speculative=0).token_ids.tolist() for p in PROMPTS}
    got, errors = {}, []

    def work(prompt, k):
        try:
            got[prompt] = rand.generate(prompt, max_new_tokens=48, ignore_eos=True, speculative=k).token_ids.tolist()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p, i + 1)) for i, p in enumerate(PROMPTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and got == want


def test_another_model_of_the_same_architecture_runs_beside_a_speculating_one(rand, trained):
    """Both share transformers' (or mlx-lm's) modeling module, where the verify swaps the delta
    rule: the other model's prefills (and its traces) must not go through it."""
    long = "def parse(tokens):\n" * 12
    want_spec = rand.generate(PROMPTS[0], max_new_tokens=60, ignore_eos=True, speculative=0).token_ids.tolist()
    want_other = [trained.generate(long + str(i), max_new_tokens=2, ignore_eos=True).token_ids.tolist() for i in range(12)]
    got, errors = {}, []

    def speculate():
        try:
            got["spec"] = rand.generate(PROMPTS[0], max_new_tokens=60, ignore_eos=True, speculative=3).token_ids.tolist()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def other():
        try:
            got["other"] = [trained.generate(long + str(i), max_new_tokens=2, ignore_eos=True,
                                             trace=workbench.Trace(deltanet=True) if i % 3 == 0 else None
                                             ).token_ids.tolist() for i in range(12)]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=speculate), threading.Thread(target=other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert got["spec"] == want_spec and got["other"] == want_other
    if rand.backend == "mlx":
        import mlx_lm.models.qwen3_5 as modeling
        assert modeling.gated_delta_update.__name__ == "gated_delta_update"
    else:
        import transformers.models.qwen3_5_moe.modeling_qwen3_5_moe as modeling
        assert "stepwise" not in modeling.torch_chunk_gated_delta_rule.__name__


def _trace():
    return workbench.Trace(routing=True, router_probs=True,
                           deltanet=workbench.DeltaNetCapture(states=list(range(0, 48, 4)), layers=[0, 2],
                                                              inputs=True))


@pytest.mark.parametrize("k", [1, 3])
def test_traces_hold_the_accepted_tokens_only_in_order(rand, monkeypatch, k):
    """Every verify reads rejected drafts too; the records must be plain decoding's all the same,
    after every acceptance length (oracle drafts), row for row."""
    plain = rand.generate(PROMPTS[1], max_new_tokens=40, ignore_eos=True, trace=_trace(), speculative=0)
    monkeypatch.setattr(rand.engine, "speculation", oracle(rand, plain.token_ids.tolist()))
    spec = rand.generate(PROMPTS[1], max_new_tokens=40, ignore_eos=True, trace=_trace(), speculative=k)
    assert 0 < spec.stats.accepted_tokens < spec.stats.draft_tokens
    _assert_same_run(plain, spec)


def _assert_same_run(plain, spec) -> None:
    """The same tokens, and the same routing and DeltaNet records row for row."""
    assert spec.token_ids.tolist() == plain.token_ids.tolist()
    for name, fields in (("routing", ("experts", "weights", "shared_gate", "probs", "token_ids")),
                         ("deltanet", ("decay", "beta", "state_norm", "final_state", "states", "state_tokens",
                                       "queries", "keys", "values", "token_ids"))):
        a, b = getattr(plain, name), getattr(spec, name)
        for f in fields:
            x, y = getattr(a, f), getattr(b, f)
            assert x.shape == y.shape, (name, f, x.shape, y.shape)
            if x.dtype.kind == "f":  # a verify sums k + 1 tokens at once: float32 drift over hundreds of tokens
                np.testing.assert_allclose(y, x, rtol=1e-3, atol=1e-4, err_msg=f"{name}.{f}")
            else:
                assert np.array_equal(x, y), (name, f)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_run_that_ends_on_eos_or_a_stop_string_keeps_plain_decodings_rows(rand, monkeypatch, k):
    """Plain decoding reads a run's last token (it queued that step) unless Stop or max_new_tokens
    ended it; a speculative run that ends among a verify's tokens keeps the same rows and final
    DeltaNet state, whether the end is an accepted draft or the verify's own sample (oracle drafts
    place it either way)."""
    messages = [{"role": "user", "content": "Tell me a very long story about a cat."}]  # ends by itself
    kw = dict(max_new_tokens=2000, thinking=False, trace=_trace())
    plain = rand.generate(messages, speculative=0, **kw)
    ids, end = plain.token_ids.tolist(), len(plain.token_ids) - 1
    assert plain.finish_reason == "stop" and plain.routing.n_tokens == len(plain.prompt_ids) + len(ids)
    # Drafts all right put the end on a draft unless it falls where a verify samples (every k + 1
    # tokens); one early rejection shifts that by one.
    as_draft = (lambda g, j: False) if end % (k + 1) else (lambda g, j: g == 0 and j == 0)
    as_sample = lambda g, j: g + 1 + j == end  # noqa: E731  the end drafted wrong: the verify samples it
    for wrong, drafted in ((as_draft, True), (as_sample, False)):
        monkeypatch.setattr(rand.engine, "speculation", oracle(rand, ids, wrong))
        spec = rand.generate(messages, speculative=k, **kw)
        assert spec.finish_reason == "stop" and bool(spec.stats.drafted[-1]) == drafted
        _assert_same_run(plain, spec)
    stop = plain.text[20:24]
    plain = rand.generate(messages, speculative=0, stop=stop, **kw)
    monkeypatch.setattr(rand.engine, "speculation", oracle(rand, ids, lambda g, j: False))
    spec = rand.generate(messages, speculative=k, stop=stop, **kw)
    assert spec.finish_reason == "stop" and spec.text == plain.text
    _assert_same_run(plain, spec)


def test_interventions_act_as_without_speculation(rand, monkeypatch):
    change = workbench.Intervention(disable={3: [0, 1, 2, 3, 4]}, force={1: 9}, positions=list(range(8, 30)))
    kw = dict(max_new_tokens=40, ignore_eos=True, intervene=change, trace=workbench.Trace(routing=True))
    plain = rand.generate(PROMPTS[2], speculative=0, **kw)
    unchanged = rand.generate(PROMPTS[2], max_new_tokens=40, ignore_eos=True, speculative=0)
    assert plain.token_ids.tolist() != unchanged.token_ids.tolist()
    monkeypatch.setattr(rand.engine, "speculation", oracle(rand, plain.token_ids.tolist()))
    spec = rand.generate(PROMPTS[2], speculative=2, **kw)
    assert spec.token_ids.tolist() == plain.token_ids.tolist()
    assert np.array_equal(spec.routing.experts, plain.routing.experts)


def test_prompt_cache_entry_left_by_speculation_continues_plainly(rand):
    rand.prompt_cache.clear()
    messages = [{"role": "user", "content": "Name three colours."}]
    first = rand.generate(messages, max_new_tokens=24, ignore_eos=True, prompt_cache=True, speculative=2)
    follow = messages + [{"role": "assistant", "content": first.text}, {"role": "user", "content": "And two more?"}]
    cached = rand.generate(follow, max_new_tokens=24, ignore_eos=True, prompt_cache=True)
    rand.prompt_cache.clear()
    fresh = rand.generate(follow, max_new_tokens=24, ignore_eos=True, speculative=0)
    assert cached.stats.reused_prompt_tokens > 0
    assert cached.token_ids.tolist() == fresh.token_ids.tolist()


@pytest.mark.parametrize("draft", ["likely", "unlikely", "filtered out"])
def test_the_acceptance_rule_keeps_the_models_distribution(rand, draft):
    """The token a verify row yields, over many seeds, is distributed as the request's own
    distribution p (temperature 0.8, top-k 6), whether the draft is likely, unlikely or outside
    top-k: accepted with probability p(d), otherwise drawn from p without d."""
    from workbench.sampling import SamplingParams

    row = np.array([3.0, 2.5, 2.0, 1.0, 0.5, 0.0, -1.0, -2.0] + [-4.0] * 8)
    p = np.exp(row[:6] / 0.8) / np.exp(row[:6] / 0.8).sum()
    d = {"likely": 0, "unlikely": 4, "filtered out": 7}[draft]
    n, first = 20_000 if rand.backend == "torch" else 8_000, np.zeros(len(row))
    sampler = rand.engine.make_sampler(SamplingParams(temperature=0.8, top_k=6, seed=1))
    logits, drafts = device_array(rand, [row, row], "float"), device_array(rand, [d])
    for _ in range(n):
        out = sampler.verify(logits, drafts)
        first[out[0]] += 1
        assert len(out) == (2 if out[0] == d else 1)
    assert first[6:].sum() == 0
    tv = 0.5 * np.abs(first[:6] / n - p).sum()
    assert tv < (0.015 if n >= 20_000 else 0.025), (draft, first[:6] / n, p)


def test_seeded_speculative_sampling_is_reproducible(rand):
    kw = dict(max_new_tokens=40, ignore_eos=True, temperature=0.9, top_p=0.95, seed=7, speculative=3)
    assert rand.generate(PROMPTS[0], **kw).token_ids.tolist() == rand.generate(PROMPTS[0], **kw).token_ids.tolist()


def test_bad_requests_say_what_to_do(rand, trained):
    for bad in (5, -1, 1.5, True, "2"):
        with pytest.raises(WorkbenchError, match="speculative="):
            rand.generate("x", max_new_tokens=4, speculative=bad)
    assert rand.generate("x", max_new_tokens=4, speculative=0).stats.verify_steps == 0
    dense = workbench.load("tiny-dense", backend=rand.backend, device="cpu")
    if not dense.has_mtp:
        with pytest.raises(WorkbenchError, match="multi-token-prediction"):
            dense.generate("x", max_new_tokens=4, speculative=2)
    assert len(rand.generate("x", max_new_tokens=4).token_ids) == 4  # still usable


def test_a_checkpoint_without_or_with_a_broken_mtp_layer(tmp_path, backend):
    import json
    import shutil

    from safetensors.numpy import load_file, save_file

    from workbench.hub import resolve

    src = resolve("tiny-random")
    for case in ("stripped", "holed"):
        folder = tmp_path / case
        shutil.copytree(src, folder)
        weights = load_file(str(folder / "model.safetensors"))
        drop = [k for k in weights if k.startswith("mtp.")] if case == "stripped" else ["mtp.fc.weight"]
        save_file({k: v for k, v in weights.items() if k not in drop}, str(folder / "model.safetensors"))
        if case == "stripped":
            model = workbench.load(folder, backend=backend, device="cpu")
            assert not model.has_mtp and json.loads((folder / "config.json").read_text())["text_config"][
                "mtp_num_hidden_layers"] == 1  # declared, but not there
            with pytest.raises(WorkbenchError, match="no mtp.* tensors"):
                model.generate("x", max_new_tokens=4, speculative=1)
        else:  # the text model is whole: it loads and runs; drafting names the hole
            model = workbench.load(folder, backend=backend, device="cpu")
            assert model.has_mtp and model.engine._mtp_layer is None  # nothing read before it is used
            for _ in range(2):  # a failed load is not remembered as a layer
                with pytest.raises(WorkbenchError, match="mtp.fc.weight"):
                    model.generate("x", max_new_tokens=4, speculative=1)
            if model.speculative:  # the default: plain decoding, said once, then no more tries
                with pytest.warns(RuntimeWarning, match="without speculation by default.*mtp.fc.weight"):
                    assert model.generate("x", max_new_tokens=4).stats.verify_steps == 0
                assert model.speculative == 0
        assert len(model.generate("x", max_new_tokens=4).token_ids) == 4


def test_stats_count_what_the_drafts_did(rand):
    g = rand.generate(PROMPTS[0], max_new_tokens=30, ignore_eos=True, speculative=3)
    s = g.stats
    assert s.draft_tokens == int(np.sum(s.proposed_by_position))
    assert s.accepted_tokens == int(np.sum(s.accepted_by_position))
    assert len(g.token_ids) - (1 + s.accepted_tokens + s.verify_steps) in (0, 1)
    assert "drafts" in str(s)


def test_figures_show_what_the_drafts_did(rand, monkeypatch):
    import json

    import plotly.io as pio

    from workbench.figures import speculative as fs

    plain = rand.generate(PROMPTS[0], max_new_tokens=40, ignore_eos=True, speculative=0)
    monkeypatch.setattr(rand.engine, "speculation", oracle(rand, plain.token_ids.tolist()))
    g = rand.generate(PROMPTS[0], max_new_tokens=40, ignore_eos=True, speculative=3)
    drafted = g.stats.drafted
    assert len(drafted) == 40 and drafted.sum() == g.stats.accepted_tokens and not drafted[0]
    tokens = [rand.decode([t]) for t in g.token_ids]
    figs = [fs.drafted_tokens(tokens, drafted), fs.acceptance({"code": g.stats, "both": [g.stats, g.stats]}),
            fs.ceiling({"27B bf16 H200": workbench.plan("Qwen/Qwen3.5-27B", "bf16", context=4096, device="H200")},
                       measured={"this run": g.stats.mean_accepted_length})]
    cells = [c for row in figs[0].data[0].z for c in row if c is not None]
    assert sum(cells) == drafted.sum() and len(cells) == 40
    for fig in figs:
        json.loads(pio.to_json(fig, validate=False, engine="json"),
                   parse_constant=lambda c: pytest.fail(f"{c} in {fig.layout.title.text}"))
    with pytest.raises(WorkbenchError, match="draft flags"):
        fs.drafted_tokens(tokens[:-1], drafted)


def test_a_backend_that_cannot_speculate_yet_says_so():
    from selection import gguf_copy
    model = workbench.load(str(gguf_copy("F32")))
    want = "speculative=2 needs a draft layer"
    assert not model.has_mtp
    with pytest.raises(WorkbenchError, match=want):
        model.generate("x", max_new_tokens=4, speculative=2)
    with pytest.raises(WorkbenchError, match=want):
        workbench.bench(model, prompt_tokens=4, new_tokens=2, repeats=1, speculative=2)
    assert len(model.generate("x", max_new_tokens=4, ignore_eos=True).token_ids) == 4


def test_the_default_speculates_where_it_pays_and_is_settable(rand):
    """`model.speculative` is what `generate` does without `speculative=`: 2 with an MTP layer where
    a verify is cheap (torch without CUDA graphs, MLX on Metal), 0 on MLX on a CPU (it measured
    even there); a set value is kept, a bad one refused, None returns to the default."""
    assert rand.device == "cpu" and rand.has_mtp
    default = 2 if rand.backend == "torch" else 0
    assert rand.speculative == default
    try:
        rand.speculative = 3
        g = rand.generate(PROMPTS[0], max_new_tokens=8, ignore_eos=True)
        assert g.stats.verify_steps > 0 and "k=3" in g.stats.decode_path
        assert rand.generate(PROMPTS[0], max_new_tokens=8, ignore_eos=True, speculative=0).stats.verify_steps == 0
        with pytest.raises(WorkbenchError, match="speculative=5"):
            rand.speculative = 5
        assert rand.speculative == 3
        rand.speculative = 0
        assert rand.generate("x", max_new_tokens=8, ignore_eos=True).stats.verify_steps == 0
    finally:
        rand.speculative = None
    assert rand.speculative == default


@pytest.fixture
def speculating_by_default(rand, monkeypatch):
    """`rand` with its backend's default on (MLX on a CPU has it off: the back-off is the loop's)."""
    monkeypatch.setattr(type(rand.engine), "speculation_pays", property(lambda self: True))
    assert rand.speculative == 2
    return rand


def test_the_default_backs_off_when_its_drafts_do_not_pay(speculating_by_default, monkeypatch):
    """tiny-random's untrained layer accepts almost nothing: after BACKOFF_WINDOW verifies the default
    gives way to plain steps, with the plain output, traces included; an asked-for k never does."""
    from workbench.generation import BACKOFF_WINDOW

    rand = speculating_by_default
    kw = dict(max_new_tokens=48, ignore_eos=True, trace=_trace())
    plain = rand.generate(PROMPTS[1], speculative=0, **kw)
    auto = rand.generate(PROMPTS[1], **kw)
    assert auto.stats.verify_steps == BACKOFF_WINDOW and auto.stats.accepted_tokens < BACKOFF_WINDOW / 2
    assert auto.stats.backed_off_at == BACKOFF_WINDOW + auto.stats.accepted_tokens + 1  # prefill's token too
    assert "plain steps after token" in str(auto.stats)
    assert len(auto.stats.drafted) == 48 and not auto.stats.drafted[auto.stats.backed_off_at:].any()
    _assert_same_run(plain, auto)
    asked = rand.generate(PROMPTS[1], max_new_tokens=48, ignore_eos=True, speculative=2)
    assert asked.stats.backed_off_at is None and asked.stats.verify_steps > BACKOFF_WINDOW
    assert asked.token_ids.tolist() == plain.token_ids.tolist()


def test_the_default_keeps_drafting_while_they_pay(speculating_by_default, monkeypatch):
    """Drafts that are right (oracle) keep the default speculating to the end; once they turn wrong
    (from the 30th token on), it backs off within BACKOFF_WINDOW verifies, output unchanged."""
    from workbench.generation import BACKOFF_WINDOW

    rand = speculating_by_default
    plain = rand.generate(PROMPTS[2], max_new_tokens=60, ignore_eos=True, speculative=0)
    ids = plain.token_ids.tolist()
    monkeypatch.setattr(rand.engine, "speculation", oracle(rand, ids, wrong=lambda g, j: False))
    right = rand.generate(PROMPTS[2], max_new_tokens=60, ignore_eos=True)
    assert right.stats.backed_off_at is None and right.stats.mean_accepted_length > 2.5
    monkeypatch.setattr(rand.engine, "speculation", oracle(rand, ids, wrong=lambda g, j: g >= 30))
    turned = rand.generate(PROMPTS[2], max_new_tokens=60, ignore_eos=True, seed=3)
    assert 30 < turned.stats.backed_off_at <= 30 + BACKOFF_WINDOW + 1
    assert turned.token_ids.tolist() == ids == right.token_ids.tolist()


def test_seeded_sampling_with_the_default_is_reproducible(speculating_by_default):
    """The back-off reads tokens, not clocks: a seeded run makes the same choices every time."""
    rand = speculating_by_default
    runs = [rand.generate(PROMPTS[0], max_new_tokens=40, ignore_eos=True, temperature=0.9, seed=11)
            for _ in range(2)]
    assert runs[0].token_ids.tolist() == runs[1].token_ids.tolist()
    assert runs[0].stats.backed_off_at == runs[1].stats.backed_off_at is not None


def test_the_benchmark_measures_what_it_is_asked(speculating_by_default):
    """bench's None is plain decoding, as llama-bench measures, whatever the model's default."""
    df = workbench.bench(speculating_by_default, prompt_tokens=4, new_tokens=4, repeats=1)
    assert list(df.speculative) == [0, 0]


def test_mlx_and_torch_mtp_layers_compute_the_same_drafts():
    """The two backends load the same `mtp.*` tensors into their own classes (norm offsets, fused
    experts): on the same hidden states and tokens, the layer's outputs and drafts agree."""
    import mlx.core as mx
    import torch
    from mlx_lm.models.cache import KVCache
    from transformers import DynamicCache

    on_torch = workbench.load("tiny", backend="torch", device="cpu")
    on_mlx = workbench.load("tiny", backend="mlx", device="cpu")
    ids = np.asarray(on_torch.tokenizer.encode("def add(a, b):\n    return a + b\n\ndef sub(a, b):\n"))
    with torch.inference_mode():
        hidden = on_torch.engine.model.model(input_ids=torch.as_tensor(ids)[None]).last_hidden_state[0]
        head = on_torch.engine.mtp
        want = head(torch.as_tensor(ids[1:]), hidden[:-1], torch.arange(len(ids) - 1), DynamicCache())
        want_drafts = head.logits(want).argmax(-1).numpy()
    got = on_mlx.engine.mtp(mx.array(ids[1:]), mx.array(hidden[:-1].numpy()), KVCache())
    np.testing.assert_allclose(np.array(got), want.numpy(), atol=1e-4)
    assert np.array_equal(np.array(on_mlx.engine.mtp.logits(got).argmax(-1)), want_drafts)


def _chi_square_p(a: dict, b: dict) -> float:
    """p-value of a two-sample chi-square test that counts `a` and `b` ({outcome: n}) come from one
    distribution (Wilson-Hilferty approximation of the chi-square tail; rare outcomes pooled)."""
    import math

    outcomes = sorted(set(a) | set(b))
    na, nb = sum(a.values()), sum(b.values())
    common = [o for o in outcomes if a.get(o, 0) + b.get(o, 0) >= 10]
    rows = [(a.get(o, 0), b.get(o, 0)) for o in common]
    rows.append((na - sum(r[0] for r in rows), nb - sum(r[1] for r in rows)))  # the pooled rest
    rows = [r for r in rows if sum(r)]
    stat = 0.0
    for x, y in rows:
        total = x + y
        for observed, n in ((x, na), (y, nb)):
            expected = total * n / (na + nb)
            stat += (observed - expected) ** 2 / expected
    df = len(rows) - 1
    if df < 1:
        return 1.0
    z = ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return 0.5 * math.erfc(z / math.sqrt(2))


def test_seeded_speculative_sampling_has_plain_samplings_distribution(trained):
    """End to end: the first three tokens after a prompt, sampled with 250 seeds, have the same
    distribution with a draft (token 1 from the prefill; token 2 the draft kept with probability
    p(d), or a correction drawn from p without d; token 3 the verify's next token after a kept
    draft) as without."""
    from collections import Counter

    # a prompt whose drafts are kept about half the time, so both branches of the rule are sampled
    # often; temperature 1.5 spreads the three tokens over enough outcomes for the test to say
    # something (stage 12 at 1.0: 5 outcomes on MLX, 6 on torch; at 1.5: 13 and 11, drafts kept
    # 118 and 126 times of 250)
    ids = trained.tokenizer.encode("def add(a, b):\n    return")
    kw = dict(max_new_tokens=3, temperature=1.5, top_k=4, ignore_eos=True)
    plain, spec, kept, dropped = Counter(), Counter(), 0, 0
    for seed in range(250):
        plain[tuple(trained.generate(ids, seed=seed, speculative=0, **kw).token_ids.tolist())] += 1
        g = trained.generate(ids, seed=10_000 + seed, speculative=1, **kw)
        spec[tuple(g.token_ids.tolist())] += 1
        kept += g.stats.accepted_tokens
        dropped += g.stats.draft_tokens - g.stats.accepted_tokens
    assert kept > 25 and dropped > 25, "both branches of the rule must be exercised"
    assert len(plain) > 5, "a spread-out distribution, or the test says nothing"
    assert _chi_square_p(plain, spec) > 0.001, (plain.most_common(8), spec.most_common(8))
