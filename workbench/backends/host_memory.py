"""Peak resident memory of this process, for devices that keep no allocator statistics (CPU)."""
from __future__ import annotations

from pathlib import Path


def reset_peak() -> None:
    """Reset the kernel's high-water mark of resident memory (Linux: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux, or not allowed: the peak then covers the whole process lifetime


def peak_bytes() -> int | None:
    """VmHWM of this process in bytes, or None where /proc is unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
