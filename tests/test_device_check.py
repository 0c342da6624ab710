"""scripts/device_check.py, the GPU check of the CUDA path, runs end to end at tiny shapes on CPU,
so it is known to work before a GPU is at hand."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import device_check  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("device") / "report.json"
    device_check.main(["--tiny", "--device", "cpu", "--prompt", "32", "--new", "8", "--reference-new", "4",
                       "--repeats", "1", "--check-steps", "8", "--out", str(out)])
    return json.loads(out.read_text())


def test_builds_the_release_structure_at_tiny_shapes(report):
    model = report["model"]
    assert model["config"] == "Qwen3.5-35B-A3B" and model["tiny"]
    assert model["layers"] == 4 and model["layers_in_release"] == 40
    assert "3 Gated DeltaNet, 1 full attention" in model["summary"]
    assert model["weight_bytes_per_token"] > 0
    assert report["environment"]["torch"] and report["environment"]["transformers"]


def test_fast_path_matches_the_reference(report):
    check = report["check"]
    assert check["passed"], check
    assert check["argmax_agreement"] == 1.0 and check["relative_diff"] < 1e-4
    assert check["greedy_tokens_identical"] == check["greedy_tokens"] == 8


def test_measures_and_reports(report):
    tests = {row["test"] for row in report["bench"]}
    assert tests == {"pp32", "tg8"}
    assert report["bench_reference"][0]["test"] == "tg4"
    assert set(report["phases_s"]) == {"build", "check", "bench fast path", "bench reference path"}
    assert report["kernels"]["decode"] == "static cache, eager step"
    summary = report["summary"]
    assert summary["tg_tokens_per_s"] > 0 and summary["fast_vs_reference"] > 0
    assert summary["target_met"] is False  # tiny shapes on a CPU prove nothing about the target


def test_unknown_config_is_named(tmp_path):
    with pytest.raises(SystemExit, match="no config for 'Qwen9'.*Qwen3.5-35B-A3B"):
        device_check.main(["--model", "Qwen9", "--tiny", "--device", "cpu", "--out", str(tmp_path / "r.json")])
