"""The throughput harness: llama-bench's test names and columns, statistics recomputed from the raw
timings, warm-up excluded, EOS ignored, synthetic prompts deterministic, bad arguments refused;
the CLI as a user runs it."""
import json
import statistics

import numpy as np
import pytest

import workbench
from workbench.benchmark import markdown, plan_tests, weight_bytes_per_token
from workbench.cli import main


@pytest.fixture()
def counted(tiny_pair, monkeypatch):
    """The torch model with its engine's forward and synchronize counted."""
    model = tiny_pair["torch"]
    engine = model.engine
    calls = {"forward": [], "sync": 0}
    forward, sync = engine.forward, engine.synchronize

    def counting_forward(tokens, cache):
        calls["forward"].append(tokens.copy() if isinstance(tokens, np.ndarray) else "token")
        return forward(tokens, cache)

    def counting_sync():
        calls["sync"] += 1
        return sync()

    monkeypatch.setattr(engine, "forward", counting_forward)
    monkeypatch.setattr(engine, "synchronize", counting_sync)
    return model, calls


def test_test_names_follow_llama_bench():
    names = [t.name for t in plan_tests([128, 512], 64, [0, 1024], combined=True)]
    assert names[:5] == ["pp128", "pp512", "tg64", "pp128+tg64", "pp512+tg64"]
    assert names[5:] == [n + " @ d1024" for n in names[:5]]


def test_rows_columns_and_statistics(tiny):
    df = workbench.bench(tiny, prompt_tokens=16, new_tokens=8, repeats=3, depth=[0, 8], combined=True,
                         bandwidth_gbs=50)
    assert list(df.test) == ["pp16", "tg8", "pp16+tg8", "pp16 @ d8", "tg8 @ d8", "pp16+tg8 @ d8"]
    for col in ("model", "backend", "device", "dtype", "t/s", "t/s std", "ttft_ms", "latency_ms_median",
                "latency_ms_p99", "weight_GB/s", "ceiling_share", "peak_memory_MiB", "runs_s"):
        assert col in df.columns
    for _, row in df.iterrows():
        rates = [(row.n_prompt + row.n_gen) / t for t in row.runs_s]
        assert len(rates) == 3
        assert row["t/s"] == pytest.approx(statistics.fmean(rates))
        assert row["t/s std"] == pytest.approx(statistics.stdev(rates))
    tg = df[df.test == "tg8"].iloc[0]
    assert np.isnan(tg.ttft_ms) and tg.latency_ms_median <= tg.latency_ms_p99
    assert tg["ceiling_share"] == pytest.approx(tg["weight_GB/s"] / 50)
    pp = df[df.test == "pp16"].iloc[0]
    assert pp.ttft_ms > 0 and np.isnan(pp.latency_ms_median) and np.isnan(pp["weight_GB/s"])
    assert "±" in markdown(df) and "pp16+tg8 @ d8" in markdown(df)


def test_warm_up_is_run_but_not_timed_and_eos_is_ignored(counted):
    model, calls = counted
    df = workbench.bench(model, prompt_tokens=0, new_tokens=5, repeats=2)
    # tg5: one start token + 5 steps, for the warm-up and each of the 2 timed runs
    assert len(calls["forward"]) == 3 * (1 + 5)
    assert len(df.runs_s[0]) == 2
    assert calls["sync"] >= 3  # a synchronisation before the clocks of every run


def test_synthetic_prompts_are_deterministic(counted):
    model, calls = counted
    workbench.bench(model, prompt_tokens=12, new_tokens=0, repeats=1)
    first = [c for c in calls["forward"] if not isinstance(c, str)]
    calls["forward"].clear()
    workbench.bench(model, prompt_tokens=12, new_tokens=0, repeats=1)
    second = [c for c in calls["forward"] if not isinstance(c, str)]
    assert len(first) == 2 and all(np.array_equal(a, b) for a, b in zip(first, second))


def test_weight_bytes_per_token_counts_active_weights(tiny):
    spec = tiny.spec
    assert weight_bytes_per_token(tiny) == pytest.approx(4 * spec.params_active, rel=1e-9)


@pytest.mark.parametrize("kwargs, message", [
    ({"repeats": 0}, "repeats=0"), ({"prompt_tokens": -1}, "prompt_tokens"),
    ({"prompt_tokens": 0, "new_tokens": 0}, "nothing to measure"), ({"depth": 4000}, "context"),
    ({"new_tokens": True}, "new_tokens"),
], ids=["repeats", "negative", "nothing", "too-deep", "bool"])
def test_bad_arguments_are_refused(tiny, kwargs, message):
    with pytest.raises(workbench.WorkbenchError, match=message):
        workbench.bench(tiny, **{"prompt_tokens": 8, "new_tokens": 2, "repeats": 1, **kwargs})


def test_cli_sweep_writes_json_and_shows_progress(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["bench", "-m", "tiny", "-b", "torch", "-p", "8,16", "-n", "4", "-r", "1", "-o", "json",
                 "--output", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["test"] for r in rows] == ["pp8", "pp16", "tg4"]
    err = capsys.readouterr().err
    assert "[1/3] pp8" in err and "[3/3] tg4" in err
    assert main(["bench", "-m", "tiny", "-b", "torch", "-p", "8", "-n", "2", "-r", "1", "-q"]) == 0
    assert "| tiny | torch |" in capsys.readouterr().out
    assert main(["bench", "-m", "tiny", "-b", "torch", "-r", "0"]) == 2
    assert "repeats=0" in capsys.readouterr().err
    assert main(["plan", "-m", "Qwen3.5-27B", "-w", "gguf-q4_k_m", "--device", "RTX 4090"]) == 0
    assert "fits RTX 4090" in capsys.readouterr().out
