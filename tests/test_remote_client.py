"""The serving-engine client against responses laid out as vLLM's and SGLang's documentation shows
(those engines need CUDA, so a loopback stub answers with them; the routing in those answers is the
bundled model's own, traced in-process), and against broken servers. The engines that run here
(mlx_lm.server, llama.cpp's server) are tested for real in test_remote_servers.py."""
from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from http_stub import Stub
from selection import BACKENDS, LOCAL_BACKENDS

import workbench
from workbench import Trace, WorkbenchError
from workbench.remote import routing as rr
from workbench.remote.http import Endpoint

PROMPT = "def add(a, b):\n    return a + b\n\nprint(add("


@pytest.fixture(scope="module")
def local():
    backend = next((b for b in BACKENDS if b in LOCAL_BACKENDS), None)
    if backend is None:
        pytest.skip("needs torch or MLX for the reference trace")
    return workbench.load("tiny", backend=backend, device="cpu")


@pytest.fixture(scope="module")
def reference(local):
    """The in-process run the engine answers are made of: text, ids and routing [L, T, k]."""
    return local.generate(PROMPT, max_new_tokens=8, ignore_eos=True, trace=Trace(routing=True))


@pytest.fixture
def stub():
    s = Stub()
    yield s
    s.close()


def _npy(array) -> str:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode()


def _int32(array) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<i4").tobytes()).decode()


ENCODE = {"lists": lambda a: a.tolist(), "npy": lambda a: _npy(a.astype(np.int16)), "int32": _int32}


def _vllm_completion(gen, encoding: str, cached: int = 0) -> dict:
    """A /v1/completions answer as vLLM's routed-experts docs lay it out: prompt rows at the response
    level, generated rows on the choice, [tokens, moe_layers, top_k]; cached prompt rows are -1."""
    rows = gen.routing.experts.transpose(1, 0, 2).astype(np.int32)  # [token, layer, k]
    n_prompt = len(gen.prompt_ids)
    prompt_rows, gen_rows = rows[:n_prompt].copy(), rows[n_prompt:]
    prompt_rows[:cached] = -1
    return {"id": "cmpl-1", "object": "text_completion", "model": "tiny",
            "choices": [{"index": 0, "text": gen.text, "finish_reason": "length", "logprobs": None,
                         "token_ids": gen.token_ids.tolist(), "routed_experts": ENCODE[encoding](gen_rows)}],
            "prompt_token_ids": gen.prompt_ids.tolist(), "prompt_routed_experts": ENCODE[encoding](prompt_rows),
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": len(gen.token_ids),
                      "total_tokens": n_prompt + len(gen.token_ids)}}


def _connect(stub, body: dict, owned_by: str = "vllm"):
    stub.models("tiny", owned_by)
    stub.routes[("POST", "/v1/completions")] = lambda _b: (200, "application/json", body)
    return workbench.connect(stub.url)


# ---- routing from the engines ---------------------------------------------------------------
@pytest.mark.parametrize("encoding", list(ENCODE))
def test_vllm_routed_experts_in_each_encoding_give_the_in_process_routing(stub, reference, encoding):
    model = _connect(stub, _vllm_completion(reference, encoding))
    gen = model.generate(PROMPT, max_new_tokens=8, ignore_eos=True, trace=Trace(routing=True))
    trace, local = gen.routing, reference.routing
    assert np.array_equal(trace.experts, local.experts)
    assert np.array_equal(trace.token_ids, local.token_ids) and list(trace.tokens) == list(local.tokens)
    assert list(trace.phase) == list(local.phase)
    assert np.isnan(trace.weights).all() and np.isnan(trace.shared_gate).all()  # the engine does not say
    assert gen.text == reference.text
    sent = stub.requests[-1][1]
    assert sent["return_routed_experts"] is True and "stream" not in sent  # documented as non-streaming


def test_vllm_prefix_cached_rows_are_left_out_with_their_positions(stub, reference):
    model = _connect(stub, _vllm_completion(reference, "lists", cached=4))
    trace = model.generate(PROMPT, max_new_tokens=8, trace=Trace(routing=True)).routing
    assert trace.positions[0] == 4 and np.array_equal(trace.positions, np.arange(4, 4 + trace.n_tokens))
    assert np.array_equal(trace.experts, reference.routing.experts[:, 4:])
    saved = workbench.RoutingTrace.load(trace.save(stub_path := _tmp() / "r.npz"))
    assert np.array_equal(saved.positions, trace.positions) and stub_path.exists()


def _tmp():
    import tempfile
    from pathlib import Path
    return Path(tempfile.mkdtemp())


def test_sglang_routed_experts_on_the_v1_choice(stub, reference):
    rows = reference.routing.experts.transpose(1, 0, 2)  # tokens [0, prompt + output - 1)
    body = {"id": "1", "object": "text_completion", "model": "tiny",
            "choices": [{"index": 0, "text": reference.text, "finish_reason": "length",
                         "sgl_ext": {"routed_experts": _int32(rows)}}],
            "usage": {"prompt_tokens": len(reference.prompt_ids), "completion_tokens": 8}}
    model = _connect(stub, body, owned_by="sglang")
    trace = model.generate(PROMPT, max_new_tokens=8, trace=Trace(routing=True)).routing
    # No ids in SGLang's answer: the prompt's come from the tokenizer here, the generated ones are unnamed.
    n_prompt = len(reference.prompt_ids)
    assert np.array_equal(trace.experts[:, :n_prompt], reference.routing.experts[:, :n_prompt])
    assert trace.n_prompt == n_prompt


def test_sglang_generate_meta_info_and_start_len(local, reference):
    rows = reference.routing.experts.transpose(1, 0, 2)
    body = {"text": "x", "meta_info": {"routed_experts": _int32(rows[2:])}}
    got, first = rr.from_response(body, {}, local.spec, None, start_len=2)
    assert first == 2 and np.array_equal(got, rows[2:])


def test_decoder_errors_name_the_problem(local):
    spec = local.spec
    L, k = len(spec.moe_layers), spec.num_experts_per_tok
    with pytest.raises(WorkbenchError, match="enable-return-routed-experts"):
        rr.from_response({"choices": [{}]}, {}, spec, 3)
    with pytest.raises(WorkbenchError, match="not base64"):
        rr.decode("@@@", L, k)
    with pytest.raises(WorkbenchError, match="whole tokens"):
        rr.decode(_int32(np.zeros(L * k + 1)), L, k)
    with pytest.raises(WorkbenchError, match="shape"):
        rr.decode(np.zeros((2, L + 1, k), int).tolist(), L, k)
    with pytest.raises(WorkbenchError, match="ragged"):
        rr.decode([[[1, 2]], [[1]]], None, None)
    with pytest.raises(WorkbenchError, match="spec="):
        rr.decode(_int32(np.zeros(8)), None, None)
    with pytest.raises(WorkbenchError, match="experts"):
        rr.trace(np.full((3, L, k), 99, np.int32), 0, spec, np.arange(3), ["a", "b", "c"], 3)


def test_routing_views_work_on_an_engine_trace(stub, reference):
    from workbench.analysis import routing as ar
    from workbench.widgets.routing import VIEWS, RoutingSession

    model = _connect(stub, _vllm_completion(reference, "int32"))
    session = RoutingSession(model)
    session.run(PROMPT, compare_prompt=PROMPT, max_new_tokens=8)
    for view in VIEWS:
        if view in ("entropy", "shared gate"):  # drawn from weights, which the engine does not return
            with pytest.raises(WorkbenchError, match="expert ids only"):
                session.figure(view)
            continue
        fig = session.figure(view, layer=model.spec.moe_layers[0], token=3)
        assert fig.data, view
    token = session.figure("token", token=3)
    assert "weights unknown" in token.layout.title.text
    assert {e for tr in token.data for e in tr.text} == {f"E{x}" for x in reference.routing.experts[:, 3].ravel()}
    load = ar.expert_load(session.trace)
    assert np.isfinite(load.table().select_dtypes("number").to_numpy()).any()


def test_a_server_without_routing_names_the_flag(stub, reference):
    body = _vllm_completion(reference, "lists")
    del body["prompt_routed_experts"], body["choices"][0]["routed_experts"]
    model = _connect(stub, body)
    with pytest.raises(WorkbenchError, match="--enable-return-routed-experts"):
        model.generate(PROMPT, trace=Trace(routing=True))
    with pytest.raises(WorkbenchError, match="Trace\\(routing=True\\)"):
        model.generate(PROMPT, trace=Trace(deltanet=True))
    with pytest.raises(WorkbenchError, match="in-process"):
        model.generate(PROMPT, intervene=workbench.Intervention(disable={1: [0]}))
    with pytest.raises(WorkbenchError, match="logits"):
        model.logits(PROMPT)


# ---- bad servers and bad input --------------------------------------------------------------
def test_bad_addresses_fail_fast_with_the_fix():
    from workbench.remote.servers import free_port

    port = free_port()
    start = time.perf_counter()
    with pytest.raises(WorkbenchError, match="connection refused"):
        workbench.connect(f"http://127.0.0.1:{port}/v1")
    assert time.perf_counter() - start < 5
    for bad, match in (("", "invalid"), ("ftp://x/v1", "http"), ("http://127.0.0.1:99999/v1", "port")):
        with pytest.raises(WorkbenchError, match=match):
            workbench.connect(bad)
    with pytest.raises(WorkbenchError, match="timeout"):
        Endpoint.parse("http://127.0.0.1:1/v1", timeout=0)


def test_wrong_path_non_openai_reply_and_http_errors(stub):
    with pytest.raises(WorkbenchError, match="HTTP 404.*/v1"):
        workbench.connect(stub.url.replace("/v1", "/api"))
    stub.routes[("GET", "/v1/models")] = lambda _b: (200, "text/html", b"<html>hello</html>")
    with pytest.raises(WorkbenchError, match="not answer with JSON"):
        workbench.connect(stub.url)
    stub.routes[("GET", "/v1/models")] = lambda _b: (200, "application/json", {"models": []})
    with pytest.raises(WorkbenchError, match="OpenAI-compatible"):
        workbench.connect(stub.url)
    stub.routes[("GET", "/v1/models")] = lambda _b: (401, "application/json", {"error": {"message": "bad key"}})
    with pytest.raises(WorkbenchError, match="bad key.*api_key"):
        workbench.connect(stub.url)
    stub.models("tiny")
    with pytest.raises(WorkbenchError, match="does not serve 'other'.*'tiny'"):
        workbench.connect(stub.url, model="other")
    model = workbench.connect(stub.url)
    stub.routes[("POST", "/v1/completions")] = lambda _b: (500, "application/json",
                                                           {"object": "error", "message": "CUDA out of memory"})
    with pytest.raises(WorkbenchError, match="HTTP 500: CUDA out of memory"):
        model.generate("hi")
    stub.routes[("POST", "/v1/completions")] = lambda _b: (400, "application/json",
                                                           {"object": "error", "message": "max_tokens is too large"})
    with pytest.raises(WorkbenchError, match="max_tokens is too large"):
        model.generate("hi", max_new_tokens=10)


def test_a_stream_cut_mid_way_and_a_silent_server_raise_without_hanging(stub):
    stub.models("tiny")
    chunk = {"choices": [{"index": 0, "text": "hello", "finish_reason": None}]}
    stub.routes[("POST", "/v1/completions")] = lambda _b: (200, "text/event-stream", [chunk, chunk, None])
    model = workbench.connect(stub.url, timeout=2)
    stream = model.stream("hi", max_new_tokens=5)
    seen = []
    with pytest.raises(WorkbenchError, match="ended mid-way, after 2 chunks"):
        for c in stream:
            seen.append(str(c))
    assert seen == ["hello", "hello"]
    stub.routes[("POST", "/v1/completions")] = lambda _b: (200, "hang", 10)
    start = time.perf_counter()
    with pytest.raises(WorkbenchError, match="did not answer within 2 s"):
        model.generate("hi")
    assert time.perf_counter() - start < 8
    stub.routes[("POST", "/v1/completions")] = lambda _b: (200, "text/event-stream",
                                                           ["{not json", "[DONE]"])
    with pytest.raises(WorkbenchError, match="not JSON"):
        model.generate("hi")
    stub.routes[("POST", "/v1/completions")] = lambda _b: (200, "text/event-stream",
                                                           [{"error": {"message": "engine died"}}])
    with pytest.raises(WorkbenchError, match="engine died"):
        model.generate("hi")


def test_an_unknown_model_id_works_for_text_and_says_what_needs_a_spec(stub):
    stub.models("my-finetune")
    events = [{"choices": [{"index": 0, "text": " yes", "finish_reason": None}]},
              {"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]},
              {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}, "[DONE]"]
    stub.routes[("POST", "/v1/completions")] = lambda _b: (200, "text/event-stream", events)
    model = workbench.connect(stub.url)
    gen = model.generate("is it?", max_new_tokens=4, temperature=0.7, top_k=20, seed=3)
    assert gen.text == " yes" and gen.finish_reason == "stop" and gen.stats.new_tokens == 1
    sent = stub.requests[-1][1]
    assert sent["top_k"] == 20 and sent["seed"] == 3 and sent["temperature"] == 0.7 and sent["stream"] is True
    with pytest.raises(WorkbenchError, match="spec='Qwen/Qwen3.5-35B-A3B'"):
        model.spec
    assert workbench.connect(stub.url, spec="Qwen/Qwen3.5-35B-A3B").spec.num_experts == 256
    with pytest.raises(WorkbenchError, match="max_new_tokens"):
        model.generate("x", max_new_tokens=0)
    with pytest.raises(WorkbenchError, match="temperature"):
        model.generate("x", temperature=-1)


def test_structured_tool_calls_from_the_server_are_run_and_written_back(stub):
    """A server with a tool parser (vLLM --tool-call-parser qwen3_coder) streams the call as deltas;
    the chat runs it here and sends the model its own call back as the template renders it."""
    from workbench.demo_tools import TOOLS

    stub.models("Qwen/Qwen3.5-35B-A3B")
    rounds = []

    def answer(body):
        rounds.append(body)
        if len(rounds) == 1:
            return 200, "text/event-stream", [
                {"choices": [{"index": 0, "delta": {"reasoning_content": "Weather: use the tool."}}]},
                {"choices": [{"index": 0, "delta": {"tool_calls": [
                    {"index": 0, "id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]},
                {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}}]},
                {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
                              "finish_reason": "tool_calls"}]}, "[DONE]"]
        return 200, "text/event-stream", [
            {"choices": [{"index": 0, "delta": {"content": "Sunny in Paris."}, "finish_reason": "stop"}]}, "[DONE]"]

    stub.routes[("POST", "/v1/chat/completions")] = answer
    model = workbench.connect(stub.url)
    result = model.chat([{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS, thinking=True)
    assert [c.name for c, _ in result.calls] == ["get_weather"] and result.calls[0][0].arguments == {"city": "Paris"}
    assert result.text == "Sunny in Paris."
    assert rounds[0]["chat_template_kwargs"] == {"enable_thinking": True} and rounds[0]["tools"]
    assistant = rounds[1]["messages"][1]
    assert assistant["role"] == "assistant" and "<function=get_weather>\n<parameter=city>\nParis\n" in assistant["content"]
    assert rounds[1]["messages"][2]["role"] == "tool" and "Paris" in rounds[1]["messages"][2]["content"]
    assert result.generations[0].thinking == "Weather: use the tool."


def test_calls_inside_reasoning_text_are_never_run(stub):
    """A server without a reasoning parser sends the thinking inside the text: a call written there
    is not a call."""
    from workbench.demo_tools import TOOLS

    stub.models("Qwen/Qwen3.5-35B-A3B")
    text = ("Maybe <tool_call>\n<function=get_weather>\n<parameter=city>\nOslo\n</parameter>\n</function>\n"
            "</tool_call></think>\n\nI will not call anything.")
    stub.routes[("POST", "/v1/chat/completions")] = lambda _b: (200, "text/event-stream", [
        {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": "stop"}]}, "[DONE]"])
    result = workbench.connect(stub.url).chat([{"role": "user", "content": "hi"}], tools=TOOLS, thinking=True)
    assert result.calls == [] and result.text == "I will not call anything."


# ---- planning across GPUs -------------------------------------------------------------------
def test_plan_across_gpus_places_397b_on_8_h200_and_writes_the_commands():
    single = workbench.plan("Qwen/Qwen3.5-397B-A17B", weights="fp8", device="H200")
    assert not single.fits
    p = workbench.plan("Qwen/Qwen3.5-397B-A17B", weights="fp8", devices="8x H200")
    assert p.fits and p.n_devices == 8
    assert p.expert_bytes == pytest.approx(single.weight_bytes_by_kind["experts"] / 8)
    assert p.total_weight_bytes == pytest.approx(single.weight_bytes)
    assert p.kv_bytes == pytest.approx(single.kv_bytes / 2)  # 2 KV heads: one per GPU, replicated
    assert p.decode_ceiling > single.decode_ceiling
    assert "-tp" not in p.commands["vllm"] and "--tensor-parallel-size 8 --enable-expert-parallel" in p.commands["vllm"]
    assert "--enable-return-routed-experts" in p.commands["vllm"] and "Qwen3.5-397B-A17B-FP8" in p.commands["vllm"]
    assert "--tp-size 8 --ep-size 8" in p.commands["sglang"]
    same = workbench.plan("Qwen/Qwen3.5-397B-A17B", weights="fp8", device="H200", n_devices=8)
    assert same.total_bytes == pytest.approx(p.total_bytes)
    assert "does NOT fit" in workbench.plan("Qwen/Qwen3.5-397B-A17B", weights="bf16", devices="2x H200").verdict()


@pytest.mark.parametrize("kwargs, match", [
    ({"devices": "eight H200"}, "not understood"),
    ({"devices": "3x H200", "model": "Qwen/Qwen3.5-27B"}, "3 does not divide"),
    ({"devices": "8x RTX 9999"}, "RTX 9999"),
    ({"devices": "2x M4 Max 128GB"}, "not a GPU"),
    ({"n_devices": 8}, "device="),
    ({"devices": "8x H200", "device": "H200"}, "once"),
])
def test_plan_across_gpus_refuses_what_cannot_be(kwargs, match):
    model = kwargs.pop("model", "Qwen/Qwen3.5-397B-A17B")
    with pytest.raises(WorkbenchError, match=match):
        workbench.plan(model, weights="fp8" if "M4" not in str(kwargs) else "bf16", **kwargs)


def test_a_server_that_never_stops_is_not_followed_forever(stub):
    stub.models("tiny")
    chunk = {"choices": [{"index": 0, "text": "x", "finish_reason": None}]}
    stub.routes[("POST", "/v1/completions")] = lambda _b: (200, "text/event-stream", [chunk] * 500)
    model = workbench.connect(stub.url)
    with pytest.raises(WorkbenchError, match="did not stop"):
        model.generate("hi", max_new_tokens=4)
    big = {"choices": [{"index": 0, "text": "y" * 5000, "finish_reason": None}]}
    stub.routes[("POST", "/v1/completions")] = lambda _b: (200, "text/event-stream", [big] * 20)
    with pytest.raises(WorkbenchError, match="characters"):
        model.generate("hi", max_new_tokens=4)
