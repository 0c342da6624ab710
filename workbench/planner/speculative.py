"""How speculative decoding with the MTP layer moves the batch-1 decode ceiling.

A plain decode step reads every active weight once for one token. A speculative step reads:
- the verify forward over k + 1 tokens: every dense weight once (the tokens share the read), but in
  an MoE layer each token picks its own top-k experts, so the step reads the union: with E experts
  and top-k routing, about E * (1 - (1 - k/E) ** (k + 1 tokens)) experts per layer (uniform routing;
  the real union is a little smaller where consecutive tokens share experts);
- k draft steps, each the MTP layer's active weights and the whole lm_head (the largest single
  tensor of a Qwen3.5 model);
and yields the accepted drafts plus one token: the mean accepted length L (tokens per verify).
So ceiling = L x bandwidth / (verify bytes + k x draft bytes), the verify also reading the KV cache
and DeltaNet states once, as `plan()` counts them. On a dense model the verify costs one read; on
the MoE models the expert union eats much of the gain, which is why their measured speed-ups are
smaller.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import WorkbenchError
from ..tensors import mtp_tensors, text_tensors
from .devices import GB
from .formats import weight_format
from .plan import MemoryPlan


@dataclass
class SpeculativeCeiling:
    """The decode ceiling of one plan with k MTP drafts per step and a mean accepted length."""

    drafts: int
    tokens_per_verify: float      # L: accepted drafts + 1, per verify forward
    verify_bytes: float           # one verify forward over k + 1 tokens
    draft_bytes: float            # one MTP draft step
    plain_ceiling: float          # tok/s, one token per forward
    ceiling: float                # tok/s with speculation

    @property
    def speedup(self) -> float:
        return self.ceiling / self.plain_ceiling

    def __str__(self) -> str:
        return (f"k={self.drafts}, {self.tokens_per_verify:.2f} tokens per verify: a step reads "
                f"{self.verify_bytes / GB:,.2f} GB to verify + {self.drafts} x {self.draft_bytes / GB:,.2f} GB to "
                f"draft -> ceiling {self.ceiling:,.0f} tok/s ({self.speedup:.2f}x the plain {self.plain_ceiling:,.0f})")


def speculative_ceiling(plan: MemoryPlan, drafts: int, tokens_per_verify: float) -> SpeculativeCeiling:
    """The decode ceiling of `plan` (made with a device) with `drafts` MTP drafts per step that
    yield `tokens_per_verify` tokens per verify forward on average (1 .. drafts + 1)."""
    spec = plan.spec
    if plan.device is None:
        raise WorkbenchError("a ceiling needs the device's bandwidth: plan(..., device='H200').")
    if not spec.mtp_num_hidden_layers:
        raise WorkbenchError(f"{plan.model} has no multi-token-prediction layer to draft with.")
    if isinstance(drafts, bool) or not isinstance(drafts, int) or not 1 <= drafts <= 4:
        raise WorkbenchError(f"drafts={drafts!r} is invalid: give 1 to 4.")
    if not 1.0 <= tokens_per_verify <= drafts + 1:
        raise WorkbenchError(f"tokens_per_verify={tokens_per_verify!r} is invalid: it is between 1 (no draft "
                             f"accepted) and drafts + 1 = {drafts + 1} (all accepted).")
    fmt = weight_format(plan.weights)
    kept = 32 if spec.dtype == "float32" else 16
    n = spec.num_layers
    tokens = drafts + 1

    def read(tensors, m: int) -> float:
        """Bytes `m` tokens read of `tensors` in one forward."""
        total = 0.0
        for t in tensors:
            share = t.read_share
            if t.kind == "experts" and share < 1:
                share = 1 - (1 - share) ** m       # the union of m tokens' top-k
            elif t.kind == "embed" and share < 1:
                share = min(1.0, share * m)        # m embedding rows
            total += t.numel * fmt.bits(t, n, kept) / 8 * share
        return total

    text = text_tensors(spec)
    cache = plan.read_per_token - read(text, 1)   # the KV cache and DeltaNet states, read once a forward
    verify = read(text, tokens) + cache
    lm_head = [t for t in text if t.kind == "lm_head"] or [t for t in text if t.kind == "embed"]  # tied: the table
    draft = read(mtp_tensors(spec), 1) + sum(t.numel * fmt.bits(t, n, kept) / 8 for t in lm_head)
    bandwidth = plan.device.bandwidth_gbs * GB
    return SpeculativeCeiling(drafts=drafts, tokens_per_verify=float(tokens_per_verify), verify_bytes=verify,
                              draft_bytes=draft, plain_ceiling=plan.decode_ceiling,
                              ceiling=tokens_per_verify * bandwidth / (verify + drafts * draft))
