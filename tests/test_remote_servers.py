"""Real serving engines on loopback with the bundled model: mlx_lm.server (mlx extra) and llama.cpp's
server as llama-cpp-python ships it (gguf extra), started by `workbench.serve`, driven through
`workbench.connect`, and checked against the same model in-process. Each server is stopped at the
end of the module whatever happens (the fixture's finally, and `LocalServer`'s own finalizers)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from selection import BACKENDS, gguf_copy

import workbench
from workbench import Trace, WorkbenchError
from workbench.demo_tools import TOOLS
from workbench.tools import ToolBox

CODE = "def fibonacci(n):\n"
CHAT = [{"role": "user", "content": "What is the weather in Paris?"}]
ENGINES = ["mlx", "llamacpp"]
TOOLS_SCHEMAS = ToolBox(TOOLS).schemas


@pytest.fixture(scope="module", params=ENGINES)
def served(request):
    """(engine, LocalServer, RemoteModel, the same model in-process)."""
    engine = request.param
    if engine == "mlx":
        if "mlx" not in BACKENDS:
            pytest.skip("mlx_lm.server comes with the MLX backend, which is not selected")
        model, local = "tiny", workbench.load("tiny", backend="mlx", device="cpu")
    else:
        gguf_copy("Q8_0")
        model, local = "tiny:Q8_0", workbench.load("tiny:Q8_0")
    server = workbench.serve(model, engine=engine)
    try:
        yield engine, server, workbench.connect(server.url), local
    finally:
        server.stop()
        assert not server.running


def _expected(engine: str, text: str) -> str:
    # mlx_lm.server's BPE detokenizer drops the first character of a completion when it is a space
    # (mlx_lm/tokenizer_utils.py, BPEStreamingDetokenizer._maybe_trim_space): the tokens are the same.
    return text[1:] if engine == "mlx" and text.startswith(" ") else text


NEAR_TIE = 0.05  # logits: a server and the in-process model may sum in other orders (threads, batches)


def _assert_same_greedy(engine: str, local, got_text: str, want) -> None:
    """The server's greedy text is the in-process generation `want`'s, or parts from it only where
    the in-process model's two best next tokens were within NEAR_TIE of each other and the server
    took the runner-up: float summation order breaks a near-tie either way (measured on `tiny:Q8_0`
    after "def fibonacci(n):": stage 6, token 23, "\n" 3.7164 against " file" 3.7159; stage 7, token 8,
    2.3549 against 2.3349), anything else is a real difference (another sampler, a penalty the server
    adds) and fails."""
    expected = _expected(engine, want.text)
    if got_text == expected:
        return
    shift = len(want.text) - len(expected)  # mlx_lm.server's dropped leading space
    common = next(i for i in range(len(expected) + 1)
                  if i == len(expected) or i == len(got_text) or got_text[i] != expected[i])
    ids = [int(t) for t in want.token_ids]
    j = next(j for j in range(1, len(ids) + 1) if len(local.decode(ids[:j])) > common + shift) - 1
    logits = local.logits(np.asarray(list(want.prompt_ids) + ids[:j]))[-1]
    best, second = (int(t) for t in np.argsort(-logits)[:2])
    assert logits[best] - logits[second] < NEAR_TIE, (j, got_text, expected)
    done = local.decode(ids[:j])[shift:]
    runner_up = local.decode([second])[shift if j == 0 else 0:]
    assert got_text.startswith(done + runner_up), (j, got_text, expected, runner_up)


def test_greedy_text_through_the_server_equals_in_process(served):
    engine, _server, remote, local = served
    assert remote.spec == local.spec or remote.spec.num_experts == local.spec.num_experts
    got, want = remote.generate(CODE, max_new_tokens=48), local.generate(CODE, max_new_tokens=48)
    _assert_same_greedy(engine, local, got.text, want)
    assert got.stats.new_tokens == len(want.token_ids) and got.stats.prompt_tokens == len(want.prompt_ids)
    for thinking in (False, True):
        got = remote.generate(CHAT, max_new_tokens=40, thinking=thinking, tools=TOOLS_SCHEMAS)
        want = local.generate(CHAT, max_new_tokens=40, thinking=thinking, tools=TOOLS_SCHEMAS)
        if got.tool_calls:  # the server parsed the call itself: compare it with the text's call
            from workbench.tools import parse_tool_calls
            _, calls = parse_tool_calls(want.text)
            assert [(c.name, c.arguments) for c in got.tool_calls] == [(c.name, c.arguments) for c in calls]
        else:
            assert got.text == want.text, thinking
        assert (got.thinking or "") == (want.thinking or ""), thinking


def test_stream_chunks_make_the_text_and_stats_come_from_the_stream(served):
    engine, _server, remote, local = served
    stream = remote.stream(CODE, max_new_tokens=32)
    chunks = [str(c) for c in stream]
    gen = stream.generation
    assert "".join(chunks) == gen.text
    _assert_same_greedy(engine, local, gen.text, local.generate(CODE, max_new_tokens=32))
    s = gen.stats
    assert s.new_tokens == 32 and s.time_to_first_token_s > 0 and s.decode_tokens_per_s > 0
    assert len(s.inter_token_s) == len(chunks) - 1 and (s.inter_token_s >= 0).all()
    assert s.decode_path.startswith("server:")


def test_stop_closes_the_request_and_the_server_stays_usable(served):
    engine, _server, remote, local = served
    stream = remote.stream(CODE, max_new_tokens=400, ignore_eos=True)
    got = []
    for chunk in stream:
        got.append(chunk)
        if len(got) == 3:
            stream.stop()
    assert stream.generation.finish_reason == "interrupted" and len(got) <= 4
    again = remote.generate(CODE, max_new_tokens=16)  # the next request is answered, in full
    _assert_same_greedy(engine, local, again.text, local.generate(CODE, max_new_tokens=16))


def test_an_abandoned_stream_closes_its_request(served):
    import gc

    engine, _server, remote, local = served
    chunks = iter(remote.stream(CODE, max_new_tokens=400, ignore_eos=True))
    next(chunks)
    del chunks  # dropped half-way: its socket closes, so the server is free for the next request
    gc.collect()
    _assert_same_greedy(engine, local, remote.generate(CODE, max_new_tokens=8).text,
                        local.generate(CODE, max_new_tokens=8))


def test_chat_with_tools_runs_the_call_like_in_process(served):
    _engine, _server, remote, local = served
    got = remote.chat(CHAT, tools=TOOLS, thinking=False, max_new_tokens=80, temperature=0)
    want = local.chat(CHAT, tools=TOOLS, thinking=False, max_new_tokens=80, temperature=0)
    assert [(c.name, c.arguments) for c, _ in got.calls] == [(c.name, c.arguments) for c, _ in want.calls]
    assert [r for _, r in got.calls] == [r for _, r in want.calls]
    assert got.text == want.text


def test_two_threads_on_one_served_model(served):
    engine, _server, remote, local = served
    want = local.generate(CODE, max_new_tokens=24)
    out, errors = [], []

    def run():
        try:
            out.append(remote.generate(CODE, max_new_tokens=24).text)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(out) == 2 and out[0] == out[1]  # one server, one summation order
    _assert_same_greedy(engine, local, out[0], want)


def test_serving_bench_and_the_dashboard(served):
    from workbench.remote.serving_bench import markdown
    from workbench.widgets.speed import SpeedDashboard

    _engine, _server, remote, _local = served
    seen = []
    df = workbench.bench(remote, prompt_tokens=32, new_tokens=12, concurrency=[1, 2], requests=4,
                         progress=lambda *a: seen.append(a))
    assert list(df.concurrency) == [1, 2] and (df.completed == 4).all() and (df.failed == 0).all()
    assert (df.output_throughput > 0).all() and (df.ttft_ms_median > 0).all() and (df.tpot_ms_median > 0).all()
    assert (df.ttft_ms_p99 >= df.ttft_ms_median).all() and df.n_prompt.between(20, 60).all()
    assert seen[-1][-1] == "done" and "| 2 |" in markdown(df)
    board = SpeedDashboard(remote, prompt_tokens="16", new_tokens="8", concurrency="1,2", repeats=2)
    board.run()
    assert board.area.figure is not None and "concurrency" in board.table.value
    with pytest.raises(WorkbenchError, match="concurrency level"):
        workbench.bench(remote, depth=[0, 128])


def test_routing_from_a_server_that_does_not_return_it_names_the_flag(served):
    _engine, _server, remote, _local = served
    with pytest.raises(WorkbenchError, match="--enable-return-routed-experts"):
        remote.generate(CODE, max_new_tokens=4, trace=Trace(routing=True))
    assert remote.generate(CODE, max_new_tokens=4).text  # still usable


def test_chat_panel_over_a_server(served):
    from workbench.widgets.chat import ChatPanel

    _engine, _server, remote, _local = served
    panel = ChatPanel(remote, tools=TOOLS, preset="non-thinking: general")
    panel.temperature.value = 0
    panel.send("What is the weather in Paris?")
    panel.wait(120)
    result = panel.last_result
    assert result is not None and "done" in panel.status.widget.value
    assert "What is the weather in Paris?" in panel.history.value
    # The panel shows the calls the model made (whichever it made), and only those.
    assert ("get_weather(" in panel.history.value) == any(c.name == "get_weather" for c, _ in result.calls)


def test_a_model_id_the_server_does_not_serve(served):
    _engine, server, _remote, _local = served
    with pytest.raises(WorkbenchError, match="does not serve 'Qwen/Qwen3.5-27B'"):
        workbench.connect(server.url, model="Qwen/Qwen3.5-27B")


def test_a_stopped_server_is_gone_and_says_so():
    if "mlx" not in BACKENDS:
        pytest.skip("needs mlx_lm.server")
    server = workbench.serve("tiny", engine="mlx")
    url = server.url
    remote = workbench.connect(url)
    server.stop()
    assert not server.running
    with pytest.raises(WorkbenchError, match="connection refused"):
        remote.generate("x", max_new_tokens=2)
    with pytest.raises(WorkbenchError, match="GGUF"):
        workbench.serve("tiny", engine="llamacpp")
    with pytest.raises(WorkbenchError, match="loopback"):
        workbench.serve("tiny", engine="mlx", host="0.0.0.0")
    with pytest.raises(WorkbenchError, match="vLLM and SGLang"):
        workbench.serve("tiny", engine="vllm")


def test_a_server_that_dies_at_start_shows_its_log():
    if "mlx" not in BACKENDS:
        pytest.skip("needs mlx_lm.server")
    with pytest.raises(WorkbenchError, match="exited with code .* Its log"):
        workbench.serve("tiny", engine="mlx", extra_args=("--no-such-flag",), timeout=60)


def test_the_command_line_measures_a_server(served, capsys):
    from workbench.cli import main

    _engine, server, _remote, _local = served
    assert main(["bench", "-m", server.url, "-p", "16", "-n", "4", "-c", "1,2", "--requests", "2", "-q"]) == 0
    out = capsys.readouterr().out
    assert "| concurrency |" in out and "\n| 2 | 2 | 0 |" in out
    assert main(["bench", "-m", "tiny", "-c", "2"]) == 2
    assert "give its URL" in capsys.readouterr().err
