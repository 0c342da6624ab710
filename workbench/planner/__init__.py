"""Memory and hardware planning for Qwen3.5-family models, from their configs alone:
`spec(...)`, `plan(...)`, weight `FORMATS`, the `DEVICES` table."""
from ..spec import known, spec
from ..tensors import Tensor, text_tensors
from .devices import DEVICES, Device
from .formats import FORMATS, WeightFormat
from .plan import MemoryPlan, OffloadPlan, plan
from .speculative import SpeculativeCeiling, speculative_ceiling

__all__ = ["spec", "plan", "known", "MemoryPlan", "OffloadPlan", "Device", "DEVICES", "FORMATS",
           "WeightFormat", "Tensor", "text_tensors", "speculative_ceiling", "SpeculativeCeiling"]
