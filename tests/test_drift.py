"""What quantization changes: llama-perplexity's KLD statistics, routing agreement and DeltaNet error
between a reference and its quantized copies (made by workbench.quantize with mlx-lm's and
llama.cpp's own tools), across backends; the figures, the explorer, and bad input."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from selection import BACKENDS, gguf_copy

import workbench
from workbench import Trace, WorkbenchError
from workbench.analysis import drift as ad
from workbench.hub import CHECKPOINTS

TEXT = (CHECKPOINTS / "tiny" / "README.md").read_text()


@pytest.fixture(scope="module")
def gguf_models():
    return {kind: workbench.load(gguf_copy(kind)) for kind in ("F32", "Q8_0", "Q4_0")}


# ---- the maths, recomputed independently ------------------------------------------------------
def test_token_statistics_follow_llama_perplexity():
    rng = np.random.default_rng(0)
    ref, cand = rng.normal(size=(50, 30)), rng.normal(size=(50, 30))
    nxt = rng.integers(0, 30, size=50)
    d = ad.token_drift(ref, cand, nxt)
    for i in range(50):
        p = np.exp(ref[i] - ref[i].max()) / np.exp(ref[i] - ref[i].max()).sum()
        q = np.exp(cand[i] - cand[i].max()) / np.exp(cand[i] - cand[i].max()).sum()
        assert np.isclose(d.kld[i], float((p * np.log(p / q)).sum()))
        assert np.isclose(d.p_diff[i], q[nxt[i]] - p[nxt[i]])
        assert d.same_top[i] == (p.argmax() == q.argmax())
    row = ad.token_table({"c": d}).iloc[0]
    assert np.isclose(row["mean KLD"], d.kld.mean()) and np.isclose(row["99% KLD"], np.percentile(d.kld, 99))
    assert np.isclose(row["KLD ±"], np.sqrt(d.kld.var() / 49))            # llama.cpp: sqrt(var / (n - 1))
    assert np.isclose(row["PPL ratio"], np.exp(d.nll_candidate.mean() - d.nll_reference.mean()))
    assert np.isclose(row["RMS Δp"], np.sqrt((d.p_diff ** 2).mean()))
    assert ad.scored_rows(512) == slice(256, 511)                        # positions n_ctx/2 .. n_ctx-2


def test_routing_agreement_recomputed_from_sets():
    rng = np.random.default_rng(1)
    ref = np.stack([rng.permutation(8)[:3] for _ in range(40)]).reshape(2, 20, 3)
    cand = ref.copy()
    cand[0, :5, 2] = [(x + 1) % 8 if (x + 1) % 8 not in r else (x + 2) % 8 for x, r in zip(cand[0, :5, 2], ref[0, :5])]
    cand[1, 3, :] = cand[1, 3, ::-1]                                     # same set, another order
    w = np.full(ref.shape, 1 / 3)
    table = ad.routing_agreement(ref, cand, w, w, [0, 1], 8)
    for li in range(2):
        sets = [set(a) == set(b) for a, b in zip(ref[li].tolist(), cand[li].tolist())]
        jac = [len(set(a) & set(b)) / len(set(a) | set(b)) for a, b in zip(ref[li].tolist(), cand[li].tolist())]
        assert np.isclose(table["top-k set agreement"][li], np.mean(sets))
        assert np.isclose(table["mean Jaccard"][li], np.mean(jac))
        assert np.isclose(table["top-1 agreement"][li], np.mean(ref[li, :, 0] == cand[li, :, 0]))
    assert table["top-k set agreement"][1] == 1 and table["top-1 agreement"][1] < 1


# ---- the comparison on real copies ------------------------------------------------------------
def test_drift_of_the_gguf_copies(gguf_models):
    from workbench.comparison import drift

    ref = gguf_models["F32"]
    same = workbench.load(gguf_copy("F32"))
    report = drift(ref, {"F32 again": same, "Q8_0": gguf_models["Q8_0"], "Q4_0": gguf_models["Q4_0"]}, TEXT,
                   context=128)
    t = report.tokens.set_index("candidate")
    assert report.chunks == len(ref.encode(TEXT)) // 128 and t.loc["Q8_0", "tokens"] == report.chunks * 63
    assert t.loc["F32 again", "mean KLD"] < 1e-9 and t.loc["F32 again", "same top-1"] == 1
    assert 0 < t.loc["Q8_0", "mean KLD"] < t.loc["Q4_0", "mean KLD"]
    r = report.routing.groupby("candidate")["top-k set agreement"].mean()
    assert r["F32 again"] == 1 and r["Q4_0"] <= r["Q8_0"] < 1.0 + 1e-12
    # routing agreement of the last MoE layer, recomputed from raw captures of the first chunk
    ids = ref.encode(TEXT)[:128]
    a = ref.generate(ids, max_new_tokens=1, ignore_eos=True, trace=Trace(routing=True)).routing.experts
    b = gguf_models["Q4_0"].generate(ids, max_new_tokens=1, ignore_eos=True, trace=Trace(routing=True)).routing.experts
    expected = np.mean([set(x) == set(y) for x, y in zip(a[-1, :128].tolist(), b[-1, :128].tolist())])
    got = drift(ref, gguf_models["Q4_0"], ref.decode(ids), context=128).routing["top-k set agreement"].iloc[-1]
    assert np.isclose(got, expected)
    d = report.deltanet.groupby("candidate")["state norm rel. error"].mean()
    assert d["F32 again"] < 1e-6 < d["Q8_0"] < d["Q4_0"]
    worst, experts = report.changes["Q4_0"]
    assert len(worst) == 10 and {"expert", "dropped", "added"} <= set(experts.columns)


def test_quantize_makes_copies_that_load(tmp_path):
    from workbench.quantization import quantize

    q8 = quantize("tiny", "gguf-q8_0", tmp_path / "tiny-q8.gguf") if "llamacpp" in BACKENDS else None
    if q8 is not None:
        assert workbench.load(q8).dtype == "Q8_0"
    if "mlx" not in BACKENDS:
        pytest.skip("the MLX formats need the MLX backend selected")
    out = quantize("tiny", "mlx-4bit", tmp_path / "tiny-4bit")
    model = workbench.load(out, backend="mlx")
    assert model.dtype == "mlx-4bit" and "4-bit" in model.kernels["moe"]
    assert "mlx-4bit" in model.spec.summary() and model.spec.weight_format == "mlx-4bit"
    assert workbench.plan(model.spec, context=1024).weights == "mlx-4bit"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no staging left behind
    ref = workbench.load("tiny", backend="mlx")
    from workbench.comparison import drift
    report = drift(ref, model, TEXT[:1500], context=64)
    assert report.tokens["mean KLD"].iloc[0] > 0 and report.routing is not None


# ---- bad input ----------------------------------------------------------------------------------
def test_bad_comparisons_are_refused(gguf_models, tmp_path):
    from workbench.comparison import drift
    from workbench.quantization import quantize

    ref = gguf_models["F32"]
    with pytest.raises(WorkbenchError, match="shorter than one chunk"):
        drift(ref, gguf_models["Q4_0"], "def f(x):", context=128)
    if "torch" in BACKENDS:
        with pytest.raises(WorkbenchError, match="not a copy of the reference's architecture"):
            drift(ref, workbench.load("tiny-random", backend="torch"), TEXT, context=64)
        # the same checkpoint with two vocabulary entries swapped: another tokenizer
        other = tmp_path / "other-tokenizer"
        shutil.copytree(CHECKPOINTS / "tiny", other)
        tok = json.loads((other / "tokenizer.json").read_text())
        vocab = tok["model"]["vocab"]
        a, b = "Ġthe", "Ġto"
        vocab[a], vocab[b] = vocab[b], vocab[a]
        (other / "tokenizer.json").write_text(json.dumps(tok))
        with pytest.raises(WorkbenchError, match="tokenizers disagree"):
            drift(ref, workbench.load(other, backend="torch"), TEXT, context=64)
    with pytest.raises(WorkbenchError, match="not one the workbench makes"):
        quantize("tiny", "mlx-2bit", tmp_path / "x")
    with pytest.raises(WorkbenchError, match="ending in .gguf"):
        quantize("tiny", "gguf-q4_0", tmp_path / "folder")
    with pytest.raises(WorkbenchError, match="already converted"):
        quantize(gguf_copy("Q4_0"), "gguf-q8_0", tmp_path / "y.gguf")
    (tmp_path / "taken.gguf").write_text("")
    with pytest.raises(WorkbenchError, match="already exists"):
        quantize("tiny", "gguf-q8_0", tmp_path / "taken.gguf")
    broken = tmp_path / "broken"
    shutil.copytree(CHECKPOINTS / "tiny", broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(WorkbenchError):
        quantize(broken, "gguf-q8_0", tmp_path / "broken.gguf")
    assert not (tmp_path / "broken.gguf").exists() and not list(tmp_path.glob("*.partial"))
    assert len(ref.generate("def f(x):", max_new_tokens=3, ignore_eos=True).token_ids) == 3


def test_quantize_without_the_extra_names_it(tmp_path, monkeypatch):
    import sys

    from workbench.quantization import quantize

    monkeypatch.setitem(sys.modules, "mlx_lm", None)      # import mlx_lm now fails, as when not installed
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(workbench.BackendNotInstalled, match=r"qwen-workbench\[mlx\]"):
        quantize("tiny", "mlx-4bit", tmp_path / "a")
    with pytest.raises(workbench.BackendNotInstalled, match=r"qwen-workbench\[gguf\]"):
        quantize("tiny", "gguf-q4_0", tmp_path / "b.gguf")
    assert list(tmp_path.iterdir()) == []


# ---- figures and the explorer -------------------------------------------------------------------
def test_figures_and_the_explorer(gguf_models):
    from workbench.figures import drift as fd
    from workbench.widgets.quantization import VIEWS, QuantizationExplorer

    panel = QuantizationExplorer(gguf_models, reference="F32", text=TEXT[:3000], context=128)
    assert panel.candidates.value == ("Q8_0", "Q4_0")
    report = panel.run()
    assert "mean KLD" in panel.table.value and panel.progress.value == panel.progress.max
    for view in VIEWS:
        panel.view.value = view
        assert "Error" not in panel.status.text, panel.status.text
        assert panel.area.figure.data
    text = fd.text_by_kld(report, "Q4_0")
    assert len(text.data[0].x) == min(320, len(report.per_token["Q4_0"].kld))
    assert "experts L" in text.data[0].hovertext[0] and "top-1 reference" in text.data[0].hovertext[0]
    heat = fd.routing_heatmap(report)
    assert np.asarray(heat.data[0].z).shape == (2, len(report.moe_layers))
    panel.text.value = "  "
    panel.run_button.click()
    assert "paste some text" in panel.status.text
    panel.candidates.value = ("F32",)
    panel.text.value = TEXT[:3000]
    panel.run_button.click()
    assert "at least one candidate" in panel.status.text
    assert isinstance(report.tokens, pd.DataFrame)
