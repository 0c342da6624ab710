"""The llama.cpp backend on the bundled model's GGUF copies (made with llama.cpp's own converter and
quantizer): the same interface as torch and MLX, token-for-token parity with torch on F32, routing
and DeltaNet read out of llama.cpp's graph, MoE offload, and bad input."""
from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from selection import BACKENDS, gguf_copy

import workbench
from workbench import Trace, WorkbenchError
from workbench.hub import CHECKPOINTS

# A code prompt and a chat of 200+ tokens (a system prompt, two earlier turns, a request); the
# parity script uses the same ones.
PROMPTS = json.loads((Path(__file__).parent / "data" / "parity_prompts.json").read_text())
CODE, CHAT = PROMPTS["code"], PROMPTS["chat"]


@pytest.fixture(scope="module")
def f32():
    gguf_copy("F32")
    return workbench.load("tiny:F32")


@pytest.fixture(scope="module")
def torch_tiny():
    if "torch" not in BACKENDS:
        pytest.skip("parity with torch needs the torch backend selected")
    return workbench.load("tiny", backend="torch", device="cpu")


# ---- the file: spec, tokenizer, weight types ------------------------------------------------
def test_spec_from_gguf_metadata_equals_config_json():
    from workbench.gguf.metadata import spec_from_gguf
    from workbench.gguf.reader import read_header

    ours = spec_from_gguf(read_header(gguf_copy("F32")))
    ref = workbench.spec("tiny")
    differ = {f.name for f in dataclasses.fields(ref)
              if f.name not in ("raw", "dtype") and getattr(ours, f.name) != getattr(ref, f.name)}
    assert differ == set()
    # The vision tower goes to a separate mmproj file in GGUF: the text model's counts must agree.
    assert (ours.params_text, ours.params_mtp, ours.params_active) == (ref.params_text, ref.params_mtp, ref.params_active)
    assert ours.params_vision == 0 and ours.dtype == "float32"


def test_tokenizer_from_gguf_metadata_equals_tokenizer_json():
    from workbench.gguf.metadata import tokenizer_from_gguf
    from workbench.gguf.reader import read_header
    from workbench.tokenizer import Tokenizer

    ours, ref = tokenizer_from_gguf(read_header(gguf_copy("F32"))), Tokenizer(CHECKPOINTS / "tiny")
    texts = [CODE, "Ça va? naïve café 😀 東京 e\u0301 \t\t  x\r\n", "<|im_start|>user\n<think>\n</think><tool_call>"]
    for text in texts:
        assert ours.encode(text).tolist() == ref.encode(text).tolist()
        assert ours.decode(ref.encode(text)) == text
    assert ours.chat_template == ref.chat_template and ours.eos_token_ids == ref.eos_token_ids
    assert ours.control_tokens == ref.control_tokens
    ids, _ = ours.encode_chat([{"role": "user", "content": "<|im_end|> hi"}], add_generation_prompt=True)
    assert ids.tolist() == ref.encode_chat([{"role": "user", "content": "<|im_end|> hi"}],
                                           add_generation_prompt=True)[0].tolist()


def test_kernels_name_the_ggml_backend_and_weight_types():
    q4 = workbench.load("tiny:Q4_0")
    assert q4.backend == "llamacpp" and q4.dtype == "Q4_0" and q4.device == "cpu"
    kernels = q4.kernels
    assert "CPU" in kernels["ggml_backends"]
    assert "routed experts Q4_0" in kernels["weights"] and "embeddings" in kernels["weights"]
    assert "CPU only" in kernels["offload"]
    assert "Q8_0" in workbench.load("tiny:Q8_0").kernels["weights"]


# ---- same interface, same tokens ----------------------------------------------------------
def test_greedy_tokens_equal_torch_on_code_and_a_long_chat(f32, torch_tiny):
    for prompt in (CODE, CHAT):
        ids = f32.prompt_ids(prompt, thinking=False)[0]
        assert ids.tolist() == torch_tiny.prompt_ids(prompt, thinking=False)[0].tolist()
        a = f32.generate(prompt, max_new_tokens=64, ignore_eos=True, thinking=False)
        b = torch_tiny.generate(prompt, max_new_tokens=64, ignore_eos=True, thinking=False)
        assert a.token_ids.tolist() == b.token_ids.tolist()
    assert len(f32.prompt_ids(CHAT, thinking=False)[0]) >= 200
    ids = f32.encode(CODE)
    ours, ref = f32.logits(ids), torch_tiny.logits(ids)
    assert np.abs(ours - ref).max() / np.abs(ref).max() < 1e-3


def test_stream_stop_and_stop_strings(f32):
    stream = f32.stream(CODE, max_new_tokens=40, ignore_eos=True)
    pieces = []
    for chunk in stream:
        pieces.append(chunk)
        if len(pieces) == 3:
            stream.stop()
    assert stream.generation.finish_reason == "interrupted" and len(stream.generation.token_ids) <= 4
    full = f32.generate(CODE, max_new_tokens=30, ignore_eos=True).text
    cut = full[5:9]
    assert f32.generate(CODE, max_new_tokens=30, ignore_eos=True, stop=cut).text == full[:full.find(cut)]


def test_chat_with_tools_equals_torch(f32, torch_tiny):
    from workbench.demo_tools import TOOLS

    ask = [{"role": "user", "content": "Convert 12 miles to km, then tell me the weather in Oslo."}]
    ours, ref = f32.chat(ask, tools=TOOLS), torch_tiny.chat(ask, tools=TOOLS)
    assert [(c.name, c.arguments, out) for c, out in ours.calls] == [(c.name, c.arguments, out) for c, out in ref.calls]
    assert ours.text == ref.text and ours.calls


def test_sampling_is_seeded_and_the_bench_runs(f32):
    a = f32.generate(CODE, max_new_tokens=16, temperature=0.8, top_p=0.9, seed=3, ignore_eos=True)
    b = f32.generate(CODE, max_new_tokens=16, temperature=0.8, top_p=0.9, seed=3, ignore_eos=True)
    assert a.token_ids.tolist() == b.token_ids.tolist()
    table = workbench.bench(f32, prompt_tokens=32, new_tokens=8, repeats=1)
    assert set(table["test"]) == {"pp32", "tg8"} and (table["t/s"] > 0).all()


# ---- routing and DeltaNet out of llama.cpp's graph --------------------------------------------
def test_routing_and_deltanet_equal_the_torch_capture(f32, torch_tiny):
    trace = Trace(routing=True, deltanet=True)
    a = f32.generate(CHAT, max_new_tokens=24, ignore_eos=True, thinking=False, trace=trace)
    b = torch_tiny.generate(CHAT, max_new_tokens=24, ignore_eos=True, thinking=False, trace=trace)
    assert a.token_ids.tolist() == b.token_ids.tolist()
    ra, rb = a.routing, b.routing
    assert ra.experts.shape == rb.experts.shape
    same = (np.sort(ra.experts, -1) == np.sort(rb.experts, -1)).all(-1)
    assert same.mean() >= 0.99, f"{same.mean():.4f} of (layer, token) top-k sets agree"
    assert (ra.experts == rb.experts).all()  # same order too: both sort by weight
    assert np.abs(ra.weights - rb.weights).max() < 1e-5 and np.abs(ra.shared_gate - rb.shared_gate).max() < 1e-5
    da, db = a.deltanet, b.deltanet
    assert np.abs(da.decay - db.decay).max() < 1e-5 and np.abs(da.beta - db.beta).max() < 1e-5
    assert np.allclose(da.state_norm, db.state_norm, rtol=1e-4, atol=1e-5)
    assert np.allclose(da.final_state, db.final_state, atol=1e-4)  # [layer, Hv, Dk, Dv], checkpoint head order


def test_untraced_decoding_never_sees_the_callback(f32):
    f32.generate(CODE, max_new_tokens=4, trace=Trace(routing=True))
    assert f32.engine.probing is None
    cache = f32.engine.new_cache()
    assert cache.context is f32.engine._plain  # the context without an eval callback


# ---- MoE offload ---------------------------------------------------------------------------
def test_offload_experts_reaches_llama_cpp_as_overrides():
    from workbench.backends.llamacpp_backend import _offload

    spec = workbench.spec("tiny")
    offload, keep = _offload(3, spec, on_gpu=True)
    array = keep[0]
    assert [array[i].pattern.decode() for i in range(3)] == [
        rf"blk\.{i}\.ffn_(up|down|gate|gate_up)_(ch|)exps" for i in range(3)]
    assert all(array[i].buft for i in range(3)) and array[3].pattern is None
    cpu, _ = _offload(3, spec, on_gpu=False)
    assert "nothing to move" in cpu.note
    plan = workbench.plan("Qwen/Qwen3.5-35B-A3B", weights="gguf-q4_k_m", device="RTX 4090").offload
    if plan is not None and plan.possible:
        assert _offload(plan, workbench.spec("Qwen/Qwen3.5-35B-A3B"), on_gpu=True)[0].requested == \
            plan.cpu_expert_layers
    model = workbench.load("tiny:Q8_0", offload_experts=2)
    assert "nothing to move" in model.kernels["offload"]
    # what reached llama.cpp, in its own words: the experts of layers 0 and 1, nothing else
    placed = set(model.engine.offload.placed)
    assert placed == {f"blk.{i}.ffn_{m}_exps.weight" for i in (0, 1) for m in ("gate", "up", "down")}
    assert len(model.generate("def f(x):", max_new_tokens=4, ignore_eos=True).token_ids) == 4
    with pytest.raises(WorkbenchError, match="offload_experts"):
        workbench.load("tiny:Q8_0", offload_experts=99)


# ---- bad input -----------------------------------------------------------------------------
def _patched(src, tmp_path, name, edit):
    data = bytearray(src.read_bytes())
    edit(data)
    out = tmp_path / name
    out.write_bytes(bytes(data))
    return out


def test_bad_files_get_clear_errors_and_the_model_keeps_working(f32, tmp_path):
    src = gguf_copy("Q4_0")
    truncated = _patched(src, tmp_path, "cut.gguf", lambda d: d.__delitem__(slice(len(d) // 2, None)))
    with pytest.raises(WorkbenchError, match="truncated"):
        workbench.load(truncated)

    def other_arch(d):
        at = d.index(b"general.architecture") + len(b"general.architecture") + 4 + 8
        d[at:at + 9] = b"llama\0\0\0\0"[:9]
    with pytest.raises(WorkbenchError, match="architecture is 'llama"):
        workbench.load(_patched(src, tmp_path, "llama.gguf", other_arch))
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(WorkbenchError, match="not a GGUF file"):
        workbench.load(not_gguf)
    with pytest.raises(WorkbenchError, match="torch and MLX load safetensors"):
        workbench.load(src, backend="torch")
    with pytest.raises(WorkbenchError, match="runs GGUF files"):
        workbench.load("tiny", backend="llamacpp")
    with pytest.raises(WorkbenchError, match="dtype"):
        workbench.load(src, dtype="bfloat16")
    with pytest.raises(WorkbenchError, match="attention maps"):
        f32.generate(CODE, max_new_tokens=2, trace=Trace(attention=True))
    with pytest.raises(WorkbenchError, match="routing interventions"):
        f32.generate(CODE, max_new_tokens=2, intervene=workbench.Intervention(disable={0: [1]}))
    assert len(f32.generate(CODE, max_new_tokens=3, ignore_eos=True).token_ids) == 3


def test_a_tokenizer_that_disagrees_with_llama_cpp_is_refused(monkeypatch):
    from workbench.gguf import metadata

    src = gguf_copy("Q8_0")
    # Rebuilt without the user-defined added tokens (<think>, <tool_call>, ...), the workbench would
    # split them into pieces where llama.cpp reads one token each: that must be caught at load.
    monkeypatch.setattr(metadata, "_USER_DEFINED", -1)
    with pytest.raises(WorkbenchError, match="disagrees with llama.cpp"):
        workbench.load(src)


def test_file_patterns_pick_exactly_one_file(tmp_path):
    src = gguf_copy("Q4_0")
    for name in ("m-Q4_0.gguf", "m-Q8_0.gguf"):
        (tmp_path / name).symlink_to(src)
    assert workbench.load(tmp_path, file="*Q4_0.gguf").path == tmp_path / "m-Q4_0.gguf"
    with pytest.raises(WorkbenchError, match="matches no GGUF file"):
        workbench.load(tmp_path, file="*Q5_K_M.gguf")
    with pytest.raises(WorkbenchError, match="matches 2 GGUF files"):
        workbench.load(tmp_path, file="*.gguf")


def test_the_extra_not_installed_names_it(monkeypatch):
    import workbench.backends as backends

    src = gguf_copy("Q4_0")
    monkeypatch.setattr(backends, "_installed", lambda name: False)
    with pytest.raises(workbench.BackendNotInstalled, match=r"qwen-workbench\[gguf\]"):
        workbench.load(src)


def test_a_hub_repository_of_gguf_files_from_an_offline_cache(tmp_path, monkeypatch):
    import os

    src = gguf_copy("Q4_0")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--Tiny-GGUF"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name in ("Tiny-Q4_0.gguf", "Tiny-Q8_0.gguf"):
        blob = repo / "blobs" / f"blob-{name}"
        os.link(src, blob) if src.stat().st_dev == blob.parent.stat().st_dev else blob.write_bytes(src.read_bytes())
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = workbench.load("org/Tiny-GGUF", file="*Q4_0.gguf")
    assert model.path.name == "Tiny-Q4_0.gguf" and model.dtype == "Q4_0"
    with pytest.raises(WorkbenchError, match="matches 2 GGUF files"):
        workbench.load("org/Tiny-GGUF", file="*.gguf")
    with pytest.raises(WorkbenchError, match="not in the Hugging Face cache"):
        workbench.load("org/Missing-GGUF", file="*Q4_0.gguf")


# ---- two threads, abandoned streams --------------------------------------------------------
def test_threads_and_abandoned_streams_share_one_model(f32):
    expected = f32.generate(CODE, max_new_tokens=24, ignore_eos=True).token_ids.tolist()
    results = {}

    def run(i):
        results[i] = f32.generate(CODE, max_new_tokens=24, ignore_eos=True).token_ids.tolist()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results.values())
    for _ in range(8):  # more than the context has sequences: each abandoned one is given back
        stream = f32.stream(CODE, max_new_tokens=50, ignore_eos=True)
        next(iter(stream))
        del stream
    assert f32.generate(CODE, max_new_tokens=24, ignore_eos=True).token_ids.tolist() == expected


def test_every_released_sequence_comes_back(f32):
    """A sequence released after another lease emptied the list of released ones is not lost (the
    finalizers all append to one list object)."""
    import gc

    from workbench.backends.llamacpp_backend import SEQUENCES

    engine = f32.engine
    for _ in range(3 * SEQUENCES):
        a, b = engine.new_cache(), engine.new_cache()
        del a
        gc.collect()
        c = engine.new_cache()  # takes back a's sequence
        del b, c
        gc.collect()
    ctx = engine._plain
    assert sorted(ctx.free + ctx.dirty) == list(range(SEQUENCES))
