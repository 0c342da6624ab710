"""Memory and memory bandwidth of common GPUs and Apple chips (vendor spec sheets), for verdicts
and decode ceilings. Pass your own `Device(...)` for anything else."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import WorkbenchError

GB = 1e9
GiB = 2**30


@dataclass(frozen=True)
class Device:
    """memory_gb: what the device has (GB, 1e9 bytes, as sold); usable_share: what a model may use
    (macOS lets the GPU wire about 3/4 of unified memory by default); bandwidth_gbs: peak GB/s."""

    name: str
    memory_gb: float
    bandwidth_gbs: float
    kind: str = "gpu"          # "gpu" | "apple" | "cpu"
    usable_share: float = 1.0

    @property
    def usable_bytes(self) -> float:
        return self.memory_gb * GB * self.usable_share


def _apple(name: str, memory_gb: float, bandwidth: float) -> Device:
    return Device(name, memory_gb, bandwidth, "apple", 0.75 if memory_gb > 36 else 0.67)


DEVICES: dict[str, Device] = {d.name: d for d in [
    Device("RTX 3060 12GB", 12, 360), Device("RTX 3090", 24, 936), Device("RTX 4060 Ti 16GB", 16, 288),
    Device("RTX 4090", 24, 1008), Device("RTX 5090", 32, 1792), Device("RTX 6000 Ada", 48, 960),
    Device("RTX PRO 6000 Blackwell", 96, 1792), Device("L4", 24, 300), Device("L40S", 48, 864),
    Device("A100 40GB", 40, 1555), Device("A100 80GB", 80, 2039), Device("H100 PCIe", 80, 2000),
    Device("H100 SXM", 80, 3350), Device("H200", 141, 4800), Device("B200", 180, 8000),
    _apple("M1 16GB", 16, 68), _apple("M2 Pro 32GB", 32, 200), _apple("M3 Max 128GB", 128, 400),
    _apple("M4 32GB", 32, 120), _apple("M4 Pro 64GB", 64, 273), _apple("M4 Max 128GB", 128, 546),
    _apple("M2 Ultra 192GB", 192, 800), _apple("M3 Ultra 512GB", 512, 819),
]}


def device(name_or_device: str | Device) -> Device:
    if isinstance(name_or_device, Device):
        return name_or_device
    if name_or_device in DEVICES:
        return DEVICES[name_or_device]
    low = {k.lower(): v for k, v in DEVICES.items()}
    if name_or_device.lower() in low:
        return low[name_or_device.lower()]
    raise WorkbenchError(f"device {name_or_device!r} is not in the table; use one of {', '.join(DEVICES)}, "
                         "or pass workbench.planner.Device(name, memory_gb, bandwidth_gbs).")


# What drivers call some of the table's devices.
_ALIASES = {"h100 80gb hbm3": "H100 SXM", "h100 sxm5": "H100 SXM", "a100-sxm4-80gb": "A100 80GB",
            "a100-sxm4-40gb": "A100 40GB", "a100 80gb pcie": "A100 80GB"}


def match(hardware_name: str) -> Device | None:
    """The table's device for a driver's name ("NVIDIA GeForce RTX 4090", "NVIDIA H200", "Apple M4
    Max"), or None when it is not known well enough to give a bandwidth."""
    name = hardware_name.lower()
    for alias, key in _ALIASES.items():
        if alias in name:
            return DEVICES[key]
    words = set(name.replace("-", " ").split())
    best, score = None, 0
    for key, dev in DEVICES.items():
        needed = [w for w in key.lower().replace("-", " ").split() if not w.endswith("gb")]
        if needed and all(w in words for w in needed) and len(needed) > score:
            best, score = dev, len(needed)
    return best
