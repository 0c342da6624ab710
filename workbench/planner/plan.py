"""`plan()`: will a model fit, in which format, at what context, and how fast can batch-1 decode
possibly go - from the spec alone, with the numbers behind each answer."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..errors import WorkbenchError
from ..spec import ModelSpec
from ..tensors import text_tensors
from .caches import deltanet_state_bytes, kv_bytes_per_token
from .devices import GB, Device, GiB
from .devices import device as lookup_device
from .formats import FORMATS, weight_format

RUNTIME_BYTES = 0.75 * GiB    # CUDA context / Metal and framework buffers, a typical floor
PREFILL_CHUNK = 512           # tokens per prefill step that activations are sized for


@dataclass
class OffloadPlan:
    """MoE expert offload (llama.cpp's --n-cpu-moe): the experts of some layers stay in system
    RAM and are computed by the CPU; everything else stays on the GPU."""

    gpu_expert_layers: int
    cpu_expert_layers: int
    gpu_bytes: float              # resident on the device
    host_bytes: float             # experts in system RAM
    gpu_read_per_token: float
    host_read_per_token: float
    host_bandwidth_gbs: float
    decode_ceiling: float         # tok/s: 1 / (gpu read / gpu bw + host read / host bw)
    problem: str | None = None    # why this split can not run (the rest alone overflows the device, RAM too small)

    @property
    def possible(self) -> bool:
        return self.problem is None

    def __str__(self) -> str:
        if self.problem:
            return f"offload: not possible ({self.problem})"
        return (f"offload: experts of {self.cpu_expert_layers} layers in system RAM ({self.host_bytes / GB:,.1f} GB), "
                f"{self.gpu_expert_layers} on the device; per token {self.gpu_read_per_token / GB:,.2f} GB from "
                f"the device + {self.host_read_per_token / GB:,.2f} GB from RAM at {self.host_bandwidth_gbs:,.0f} GB/s "
                f"-> ceiling {self.decode_ceiling:,.0f} tok/s")


@dataclass
class MemoryPlan:
    """Bytes per part for one model x format x context x batch, and what follows for a device."""

    model: str
    weights: str
    context: int
    batch: int
    weight_bytes: float
    weight_bytes_by_kind: dict
    kv_bytes: float
    state_bytes: float
    activation_bytes: float
    runtime_bytes: float
    read_per_token: float          # bytes a batch-1 decode step reads (active weights, KV, state)
    device: Device | None = None
    offload: OffloadPlan | None = None
    notes: list = field(default_factory=list)
    platform_problem: str | None = None   # why this format can not run on this device at all

    @property
    def total_bytes(self) -> float:
        return self.weight_bytes + self.kv_bytes + self.state_bytes + self.activation_bytes + self.runtime_bytes

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.weight_bytes / self._params

    @property
    def fits(self) -> bool | None:
        if self.device is None:
            return None
        return self.platform_problem is None and self.total_bytes <= self.device.usable_bytes

    @property
    def runs_with_offload(self) -> bool:
        """Whether the expert-offload plan leaves the rest on the device and the experts in RAM."""
        return self.offload is not None and self.offload.possible

    @property
    def decode_ceiling(self) -> float | None:
        """Batch-1 tok/s bound from the device's memory bandwidth, all weights on the device."""
        return None if self.device is None else self.device.bandwidth_gbs * GB / self.read_per_token

    def table(self) -> pd.DataFrame:
        rows = [("weights", self.weight_bytes), ("KV cache (full-attention layers)", self.kv_bytes),
                ("DeltaNet recurrent + conv state", self.state_bytes),
                ("activations (estimate)", self.activation_bytes), ("runtime overhead", self.runtime_bytes),
                ("total", self.total_bytes)]
        return pd.DataFrame({"part": [r[0] for r in rows], "GB": [r[1] / GB for r in rows],
                             "GiB": [r[1] / GiB for r in rows]}).set_index("part")

    def verdict(self) -> str:
        head = (f"{self.model} in {self.weights} ({self.bits_per_weight:.2f} bits/weight), context "
                f"{self.context:,}, batch {self.batch}: {self.total_bytes / GB:,.1f} GB")
        if self.device is None:
            return head
        d = self.device
        usable = d.usable_bytes / GB
        if self.platform_problem:
            return f"cannot run on {d.name}: {self.platform_problem}. ({head})"
        if self.fits:
            out = (f"{head} - fits {d.name} ({usable:,.1f} of {d.memory_gb:g} GB usable); decode ceiling "
                   f"{self.decode_ceiling:,.0f} tok/s at {d.bandwidth_gbs:,.0f} GB/s")
        elif self.offload is not None and not self.offload.possible:
            return (f"does not fit {d.name}, even with expert offload: {head}, {usable:,.1f} GB usable on the "
                    f"device; {self.offload.problem}")
        else:
            out = f"{head} - does NOT fit {d.name} ({usable:,.1f} of {d.memory_gb:g} GB usable)"
        if self.offload is not None:
            out += f"; {self.offload}"
        return out

    def __str__(self) -> str:
        return self.verdict()

    _params: int = 0
    spec: ModelSpec | None = None


def plan(spec: ModelSpec | str, weights: str | None = None, context: int = 32_768, batch: int = 1,
         device: str | Device | None = None, kv_dtype: str = "bfloat16",
         host_memory_gb: float = 64, host_bandwidth_gbs: float = 60, offload: bool | None = None,
         devices: str | None = None, n_devices: int | None = None):
    """Memory and speed plan of `spec` (a ModelSpec or anything `workbench.spec` accepts).

    weights: a format of `planner.FORMATS`; None: the checkpoint's own when it is quantized (a loaded
    MLX 4-bit or GGUF model's spec), else bf16. context: tokens per sequence; batch: sequences.
    device: a name of `planner.DEVICES` or a `Device`; the verdict and ceilings need one.
    offload: for MoE models, plan expert offload to system RAM (None: only when it does not fit).
    devices / n_devices: several GPUs of one node ("8x H200", or device="H200" with n_devices=8):
    returns a `ParallelPlan` (tensor + expert parallel, per-GPU bytes, the vLLM / SGLang commands).
    """
    from .parallel import parallel_plan, parse_devices

    count, device = parse_devices(devices, n_devices, device)
    if devices is not None or n_devices is not None:
        if device is None:
            raise WorkbenchError("n_devices needs the device too: device='H200' (or devices='8x H200').")
        single = plan(spec, weights=weights, context=context, batch=batch, device=device, kv_dtype=kv_dtype,
                      offload=False)
        return parallel_plan(single, single.spec, count, single.device)
    if isinstance(spec, str):
        from ..spec import spec as lookup
        spec = lookup(spec)
    for name, value in (("context", context), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise WorkbenchError(f"{name}={value!r} is invalid: give a whole number >= 1.")
    if context > spec.max_position_embeddings:
        raise WorkbenchError(f"context={context:,} exceeds this model's maximum of {spec.max_position_embeddings:,} tokens.")
    if weights is None:
        weights = spec.weight_format if spec.weight_format in FORMATS else "bf16"
    fmt = weight_format(weights)
    # What a quantized format leaves untouched stays at the checkpoint's precision.
    kept = 32 if spec.dtype == "float32" else 16
    tensors = text_tensors(spec)
    n = spec.num_layers
    by_kind: dict[str, float] = {}
    read = 0.0
    for t in tensors:
        b = t.numel * fmt.bits(t, n, kept) / 8
        by_kind[t.kind] = by_kind.get(t.kind, 0.0) + b
        read += b * t.read_share
    weight_bytes = sum(by_kind.values())
    kv = kv_bytes_per_token(spec, kv_dtype) * context * batch
    recurrent = deltanet_state_bytes(spec) * batch
    read += kv_bytes_per_token(spec, kv_dtype) * context + 2 * deltanet_state_bytes(spec)  # batch 1
    widest = max(spec.intermediate_size, spec.moe_intermediate_size * spec.num_experts_per_tok
                 + spec.shared_expert_intermediate_size, spec.hidden_size)
    activations = batch * (PREFILL_CHUNK * (4 * spec.hidden_size + 2 * widest) * 2 + spec.vocab_size * 4)
    dev = lookup_device(device) if device is not None else None
    result = MemoryPlan(model=spec.raw.get("_name_or_path") or spec.architecture, weights=weights,
                        context=context, batch=batch, weight_bytes=weight_bytes, weight_bytes_by_kind=by_kind,
                        kv_bytes=kv, state_bytes=recurrent, activation_bytes=activations,
                        runtime_bytes=RUNTIME_BYTES if dev is not None and dev.kind != "cpu" else 0.0,
                        read_per_token=read, device=dev)
    result._params = sum(t.numel for t in tensors)
    result.spec = spec
    if dev is not None and dev.kind not in fmt.platforms:
        where = {"apple": "Apple silicon (Metal)", "gpu": "a GPU", "cpu": "a CPU"}
        result.platform_problem = (f"{fmt.name} is a format of {fmt.backend}, which runs on "
                                   f"{' or '.join(where[k] for k in fmt.platforms)} only")
        return result
    if dev is not None and spec.is_moe and (offload or (offload is None and not result.fits)):
        result.offload = _offload(spec, result, tensors, fmt, dev, host_memory_gb, host_bandwidth_gbs)
    if dev is not None and dev.kind == "gpu" and not result.fits:
        result.notes.append(_several_gpus(result, spec, dev))
    return result


def _several_gpus(single: MemoryPlan, spec: ModelSpec, dev: Device) -> str:
    """Where one GPU is too small: the fewest of them (2, 4, 8) that hold it with tensor + expert parallelism."""
    from .parallel import parallel_plan

    for n in (2, 4, 8):
        try:
            multi = parallel_plan(single, spec, n, dev)
        except WorkbenchError:
            continue
        if multi.fits:
            return (f"{n}x {dev.name} hold it with tensor + expert parallelism ({multi.total_bytes / GB:,.1f} GB per "
                    f"GPU): workbench.plan(..., devices='{n}x {dev.name}') for the placement and the vLLM / SGLang "
                    "commands.")
    return f"even 8x {dev.name} do not hold it in {single.weights}: a smaller format or a shorter context."


def _offload(spec, result: MemoryPlan, tensors, fmt, dev: Device, host_gb: float, host_bw: float) -> OffloadPlan:
    n = spec.num_layers
    kept = 32 if spec.dtype == "float32" else 16
    expert_layer = {}
    for t in tensors:
        if t.kind == "experts":
            expert_layer[t.layer] = expert_layer.get(t.layer, 0.0) + t.numel * fmt.bits(t, n, kept) / 8
    per_layer = max(expert_layer.values())
    share = spec.num_experts_per_tok / spec.num_experts
    rest = result.total_bytes - sum(expert_layer.values())
    room = dev.usable_bytes - rest
    on_gpu = int(max(0, min(len(expert_layer), room // per_layer)))
    on_cpu = len(expert_layer) - on_gpu
    host = on_cpu * per_layer
    gpu_read = result.read_per_token - host * share
    host_read = host * share
    seconds = gpu_read / (dev.bandwidth_gbs * GB) + host_read / (host_bw * GB)
    problem = None
    if room < 0:
        problem = (f"even with every expert in system RAM the rest needs {rest / GB:,.1f} GB: shorten the context "
                   "or pick a smaller format")
    elif host > host_gb * GB:
        problem = (f"the offloaded experts need {host / GB:,.0f} GB of system RAM and {host_gb:g} GB are assumed "
                   "(host_memory_gb=)")
    return OffloadPlan(on_gpu, on_cpu, rest + on_gpu * per_layer, host, gpu_read, host_read, host_bw, 1 / seconds,
                       problem)
