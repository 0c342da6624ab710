"""Serving one model across several GPUs of one node: tensor parallel for attention, DeltaNet and the
dense parts, expert parallel for the routed experts (vLLM's `-tp N --enable-expert-parallel`,
SGLang's `--tp N --ep N`), and the engine command lines that do it.

Placement (per GPU, N GPUs): routed experts split N ways (whole experts per GPU); every other
weight split N ways by tensor parallelism (heads, intermediate rows, vocabulary rows); the KV cache
split by KV heads, but never below one head per GPU (Qwen3.5 has 2 KV heads: with N > 2 each GPU keeps
a replica of one head, as vLLM does); the DeltaNet state split by value heads. The decode ceiling is
each GPU reading its own share in parallel (a token's experts land on k of E experts spread over the
GPUs: each GPU reads k/N of them on average); it leaves out the all-reduce and all-to-all traffic
between GPUs, which at batch 1 costs tens of microseconds per layer and is the real limit of a
multi-GPU decode step.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

from ..errors import WorkbenchError
from .devices import GB, Device

ENGINE_MODEL = {"bf16": "", "fp8": "-FP8"}  # released checkpoints the engines serve, by weight format


def parse_devices(devices: str | None, n_devices: int | None, device) -> tuple[int, object]:
    """("8x H200" | n_devices=8 with device="H200") -> (8, "H200")."""
    if devices is not None:
        if not isinstance(devices, str):
            raise WorkbenchError(f"devices={devices!r}: write the count and the device, e.g. devices='8x H200'.")
        m = re.fullmatch(r"\s*(\d+)\s*[x×*]\s*(.+?)\s*", devices)
        if not m:
            raise WorkbenchError(f"devices={devices!r} is not understood: write the count and the device, e.g. "
                                 "'8x H200' or '4x H100 SXM'.")
        if n_devices is not None and n_devices != int(m.group(1)) or device is not None:
            raise WorkbenchError("give the GPUs once: devices='8x H200', or device='H200' with n_devices=8.")
        return int(m.group(1)), m.group(2)
    return (1 if n_devices is None else n_devices), device


@dataclass
class ParallelPlan:
    """One model on `n_devices` GPUs of one kind. Bytes are per GPU."""

    model: str
    weights: str
    context: int
    batch: int
    n_devices: int
    device: Device
    weight_bytes: float            # per GPU
    expert_bytes: float            # per GPU (part of weight_bytes)
    kv_bytes: float
    state_bytes: float
    activation_bytes: float
    runtime_bytes: float
    read_per_token: float          # bytes one GPU reads per batch-1 decode step
    total_weight_bytes: float      # the whole model, all GPUs
    kv_replicated: bool            # more GPUs than KV heads: each keeps a copy of one head
    commands: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    @property
    def total_bytes(self) -> float:
        """Per GPU."""
        return self.weight_bytes + self.kv_bytes + self.state_bytes + self.activation_bytes + self.runtime_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.device.usable_bytes

    @property
    def decode_ceiling(self) -> float:
        """Batch-1 tok/s bound from memory bandwidth alone (communication left out: see the module)."""
        return self.device.bandwidth_gbs * GB / self.read_per_token

    def table(self) -> pd.DataFrame:
        rows = [("weights: routed experts (1/N each)", self.expert_bytes)] if self.expert_bytes else []
        rows += [
                ("weights: everything else (tensor parallel)", self.weight_bytes - self.expert_bytes),
                ("KV cache (full-attention layers)", self.kv_bytes), ("DeltaNet recurrent + conv state", self.state_bytes),
                ("activations (estimate)", self.activation_bytes), ("runtime overhead", self.runtime_bytes),
                ("total per GPU", self.total_bytes)]
        return pd.DataFrame({"part": [r[0] for r in rows], "GB per GPU": [r[1] / GB for r in rows]}).set_index("part")

    def verdict(self) -> str:
        d, n = self.device, self.n_devices
        split = f"tensor parallel {n}" + (f", expert parallel {n}" if self.expert_bytes else "")
        head = (f"{self.model} in {self.weights} on {n}x {d.name} ({split}), context "
                f"{self.context:,}, batch {self.batch}: {self.total_bytes / GB:,.1f} GB per GPU "
                f"({self.total_weight_bytes / GB:,.0f} GB of weights in all)")
        if not self.fits:
            return (f"{head} - does NOT fit ({d.usable_bytes / GB:,.0f} GB per GPU): use more GPUs, a smaller format "
                    "or a shorter context")
        return (f"{head} - fits; decode ceiling {self.decode_ceiling:,.0f} tok/s at {d.bandwidth_gbs:,.0f} GB/s per GPU "
                "(bandwidth only: all-reduce and all-to-all between GPUs are not counted)")

    def __str__(self) -> str:
        return self.verdict()


def parallel_plan(single, spec, n: int, dev: Device) -> ParallelPlan:
    """Split the single-device `MemoryPlan` `single` of `spec` over `n` GPUs `dev`."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise WorkbenchError(f"n_devices={n!r} is invalid: give a whole number >= 1.")
    if dev.kind != "gpu":
        raise WorkbenchError(f"{dev.name} is not a GPU: tensor and expert parallel serving (vLLM, SGLang) needs "
                             "NVIDIA or AMD GPUs, e.g. devices='8x H200'.")
    problems = []
    if spec.num_attention_heads % n and n <= spec.num_attention_heads:
        problems.append(f"{spec.num_attention_heads} attention heads do not split {n} ways")
    if spec.linear_num_value_heads % n and n <= spec.linear_num_value_heads:
        problems.append(f"{spec.linear_num_value_heads} DeltaNet value heads do not split {n} ways")
    kv = spec.num_key_value_heads
    if kv % n and n % kv:
        problems.append(f"{kv} KV heads neither split {n} ways nor replicate evenly over {n} GPUs")
    if spec.is_moe and spec.num_experts % n:
        problems.append(f"{spec.num_experts} experts do not split {n} ways")
    if problems:
        raise WorkbenchError(f"tensor/expert parallel {n} does not divide this model: {'; '.join(problems)}. "
                             "Use a device count that divides them (1, 2, 4, 8).")
    experts = single.weight_bytes_by_kind.get("experts", 0.0)
    rest = single.weight_bytes - experts
    kv_share = max(1 / n, 1 / spec.num_key_value_heads)
    share = spec.num_experts_per_tok / spec.num_experts if spec.is_moe else 0.0
    expert_read = experts * share
    rest_read = single.read_per_token - expert_read - single.kv_bytes / single.batch  # weights read, non-expert
    kv_read = single.kv_bytes / single.batch
    read = expert_read / n + rest_read / n + kv_read * kv_share
    plan = ParallelPlan(model=single.model, weights=single.weights, context=single.context, batch=single.batch,
                        n_devices=n, device=dev, weight_bytes=experts / n + rest / n, expert_bytes=experts / n,
                        kv_bytes=single.kv_bytes * kv_share, state_bytes=single.state_bytes / n,
                        activation_bytes=single.activation_bytes, runtime_bytes=single.runtime_bytes,
                        read_per_token=read, total_weight_bytes=single.weight_bytes,
                        kv_replicated=n > spec.num_key_value_heads)
    plan.commands = commands(plan.model, single.weights, n, single.context, spec.is_moe)
    if plan.kv_replicated:
        plan.notes.append(f"{spec.num_key_value_heads} KV heads over {n} GPUs: each GPU keeps one KV head, so the KV "
                          f"cache is stored {n // spec.num_key_value_heads} times over.")
    if single.weights not in ENGINE_MODEL:
        plan.notes.append(f"{single.weights} is not a format vLLM or SGLang serve Qwen's releases in; the commands "
                          "name the bf16 checkpoint.")
    return plan


def commands(model: str, weights: str, n: int, context: int, moe: bool) -> dict[str, str]:
    """The vLLM and SGLang command lines for this placement, with routing returned and Qwen3.5's
    reasoning and tool-call parsers; then how to connect."""
    repo = model if "/" in model else f"Qwen/{model}"
    repo += ENGINE_MODEL.get(weights, "") if not repo.upper().endswith("-FP8") else ""
    ep_vllm = " --enable-expert-parallel" if moe and n > 1 else ""
    ep_sgl = f" --ep-size {n}" if moe and n > 1 else ""
    routed_vllm = " --enable-return-routed-experts" if moe else ""
    routed_sgl = " --enable-return-routed-experts" if moe else ""
    return {
        "vllm": (f"vllm serve {repo} --tensor-parallel-size {n}{ep_vllm} --max-model-len {context}"
                 f" --reasoning-parser qwen3 --enable-auto-tool-choice --tool-call-parser qwen3_coder{routed_vllm}"
                 " --port 8000"),
        "sglang": (f"python -m sglang.launch_server --model-path {repo} --tp-size {n}{ep_sgl} --context-length {context}"
                   f" --reasoning-parser qwen3 --tool-call-parser qwen3_coder{routed_sgl} --port 30000"),
        "connect": "workbench.connect('http://HOST:8000/v1')  # vLLM;  SGLang: http://HOST:30000/v1",
    }
