"""What a `RoutingTrace` says about the model: load balance, entropy, co-activation, cross-layer
flow, locality, specialisation, prompt-set comparison, and the effect of an intervention.

numpy/pandas only. Conventions: E experts, k chosen per token; "load" of an expert is the share of
tokens whose top-k includes it (loads of a layer sum to k; uniform routing gives k/E each).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from ..errors import WorkbenchError
from ..records import RoutingTrace
from ..trace import Intervention

if TYPE_CHECKING:
    from ..model import Model


def _traces(traces: RoutingTrace | Sequence[RoutingTrace]) -> list[RoutingTrace]:
    traces = [traces] if isinstance(traces, RoutingTrace) else list(traces)
    if not traces:
        raise WorkbenchError("no routing traces given.")
    first = traces[0]
    for t in traces[1:]:
        if t.num_experts != first.num_experts or not np.array_equal(t.layers, first.layers):
            raise WorkbenchError("these traces come from different models (experts or MoE layers differ).")
    return traces


def one_hot(trace: RoutingTrace) -> np.ndarray:
    """[moe_layer, token, E] bool: expert chosen in the token's top-k."""
    out = np.zeros(trace.experts.shape[:2] + (trace.num_experts,), dtype=bool)
    np.put_along_axis(out, trace.experts.astype(np.int64), True, axis=-1)
    return out


SHUFFLES = 20  # shuffles averaged for a baseline


def shuffled(trace: RoutingTrace, seed: int = 0) -> RoutingTrace:
    """The same routing decisions with the token positions permuted, independently per layer. Every
    expert keeps its load; any link between a token (or its neighbour) and its experts is broken.
    A statistic computed on it the same way as on the real trace is what chance gives at this load."""
    rng = np.random.default_rng(seed)
    order = np.stack([rng.permutation(trace.n_tokens) for _ in trace.layers])[..., None]   # [L, T, 1]
    return RoutingTrace(experts=np.take_along_axis(trace.experts, order, 1),
                        weights=np.take_along_axis(trace.weights, order, 1),
                        shared_gate=np.take_along_axis(trace.shared_gate, order[..., 0], 1),
                        layers=trace.layers, token_ids=trace.token_ids, tokens=trace.tokens, phase=trace.phase,
                        num_experts=trace.num_experts)


# ---- load balance -----------------------------------------------------------------------
@dataclass
class ExpertLoad:
    """Per layer: load [moe_layer, E] (share of tokens routed to each expert; rows sum to k),
    the uniform level k/E, and balance figures (one value per layer)."""

    layers: np.ndarray
    load: np.ndarray
    uniform: float
    cv: np.ndarray                  # coefficient of variation of the load
    max_over_mean: np.ndarray
    unused_share: np.ndarray        # share of experts no token was routed to
    aux_loss: np.ndarray | None     # E * sum_i load_i * P_i (= k when balanced); needs router probs
    n_tokens: int
    cv_random: float = 0.0          # the same figures for a perfectly balanced router that picks
    max_over_mean_random: float = 0.0  # k of E at random, over the same number of tokens (mean of draws)

    def table(self) -> pd.DataFrame:
        df = pd.DataFrame({"layer": self.layers, "cv": self.cv, "cv (random router)": self.cv_random,
                           "max/mean": self.max_over_mean, "max/mean (random router)": self.max_over_mean_random,
                           "unused share": self.unused_share})
        if self.aux_loss is not None:
            df["aux loss"] = self.aux_loss
        return df.set_index("layer")


def expert_load(traces: RoutingTrace | Sequence[RoutingTrace], phase: str | None = None) -> ExpertLoad:
    """Load per layer and expert over the tokens of `traces` (all, or one `phase`)."""
    traces = _traces(traces)
    chosen, probs = [], []
    for t in traces:
        keep = slice(None) if phase is None else (t.phase == phase)
        chosen.append(one_hot(t)[:, keep])
        probs.append(None if t.probs is None else t.probs[:, keep])
    chosen = np.concatenate(chosen, axis=1)
    n = chosen.shape[1]
    if n == 0:
        raise WorkbenchError(f"no tokens in phase {phase!r} in these traces.")
    load = chosen.mean(axis=1)
    mean = load.mean(axis=1)
    aux = None
    if all(p is not None for p in probs):
        p_mean = np.concatenate(probs, axis=1).mean(axis=1)
        aux = traces[0].num_experts * (load * p_mean).sum(axis=1)
    k, e = traces[0].top_k, traces[0].num_experts
    cv_random, max_random = _random_router_balance(n, k, e)
    return ExpertLoad(layers=traces[0].layers, load=load, uniform=k / e, cv=load.std(axis=1) / mean,
                      max_over_mean=load.max(axis=1) / mean, unused_share=(load == 0).mean(axis=1),
                      aux_loss=aux, n_tokens=n, cv_random=cv_random, max_over_mean_random=max_random)


def _random_router_balance(n_tokens: int, k: int, e: int, seed: int = 0) -> tuple[float, float]:
    """Mean cv and max/mean of the load when each of `n_tokens` picks k of e experts uniformly at
    random: the imbalance sampling alone gives a perfectly balanced router."""
    rng = np.random.default_rng(seed)
    cvs, maxes = [], []
    for _ in range(SHUFFLES):
        picks = np.argsort(rng.random((n_tokens, e)), axis=1)[:, :k]
        load = np.bincount(picks.ravel(), minlength=e) / n_tokens
        cvs.append(load.std() / load.mean())
        maxes.append(load.max() / load.mean())
    return float(np.mean(cvs)), float(np.mean(maxes))


# ---- per token --------------------------------------------------------------------------
def routing_entropy(trace: RoutingTrace) -> np.ndarray:
    """[moe_layer, token] entropy in nats of the router's distribution: over all experts when the
    trace has router probs (max ln E), else over the renormalised top-k weights (max ln k)."""
    p = trace.probs if trace.probs is not None else trace.weights
    p = np.clip(p.astype(np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=-1)


def coactivation(trace: RoutingTrace, layer: int) -> np.ndarray:
    """[E, E] P(expert j chosen | expert i chosen) within a token's top-k in `layer`; rows of
    never-chosen experts are nan; the diagonal is 1."""
    x = one_hot(trace)[trace.row(layer)].astype(np.float64)   # [T, E]
    both = x.T @ x
    with np.errstate(invalid="ignore", divide="ignore"):
        return both / np.diag(both)[:, None]


def cross_layer_flow(trace: RoutingTrace, layer: int, rank: int = 1) -> np.ndarray:
    """[E, E] token counts going from expert i in MoE `layer` to expert j in the next MoE layer,
    taking each token's `rank` best experts in both (rank=1: its top expert)."""
    row = trace.row(layer)
    if row + 1 >= len(trace.layers):
        raise WorkbenchError(f"layer {layer} is the last MoE layer: no next layer to flow into.")
    e = trace.num_experts
    flow = np.zeros((e, e), dtype=np.int64)
    src, dst = trace.experts[row, :, :rank], trace.experts[row + 1, :, :rank]
    for a in range(rank):
        for b in range(rank):
            np.add.at(flow, (src[:, a], dst[:, b]), 1)
    return flow


def locality(trace: RoutingTrace) -> pd.DataFrame:
    """Per layer: mean share of a token's experts also chosen by the previous token, the same share
    on shuffled routing (same loads, token order broken; mean of SHUFFLES), and their ratio."""
    if trace.n_tokens < 2:
        raise WorkbenchError("locality needs at least two tokens.")
    observed = _locality(trace)
    baseline = np.mean([_locality(shuffled(trace, seed)) for seed in range(SHUFFLES)], axis=0)
    return pd.DataFrame({"layer": trace.layers, "observed": observed, "shuffled": baseline,
                         "ratio": observed / baseline}).set_index("layer")


def _locality(trace: RoutingTrace) -> np.ndarray:
    x = one_hot(trace)
    return ((x[:, 1:] & x[:, :-1]).sum(-1) / trace.top_k).mean(axis=1)      # [L]


def specialisation(traces: RoutingTrace | Sequence[RoutingTrace], min_count: int = 3) -> pd.DataFrame:
    """Per token id seen at least `min_count` times and per layer: the share of its occurrences
    routed (in the top-k) to its most frequent expert, and the same statistic on shuffled routing
    (`shuffled`, mean of SHUFFLES). A maximum over experts is well above k/E by chance alone (about
    0.74 at 3 occurrences and 0.5 at 10 for top-4 of 16), so the shuffled column is the baseline."""
    traces = _traces(traces)
    observed = _favourite_share(traces, min_count)
    if observed.empty:
        return observed.assign(shuffled=[])
    runs = [_favourite_share([shuffled(t, seed * len(traces) + i) for i, t in enumerate(traces)], min_count)
            for seed in range(SHUFFLES)]
    baseline = pd.concat(runs).groupby(["token_id", "layer"])["share"].mean().rename("shuffled")
    return observed.join(baseline, on=["token_id", "layer"])


def _favourite_share(traces: list[RoutingTrace], min_count: int) -> pd.DataFrame:
    ids = np.concatenate([t.token_ids for t in traces])
    texts = np.concatenate([t.tokens for t in traces])
    chosen = np.concatenate([one_hot(t) for t in traces], axis=1)    # [L, T, E]
    rows = []
    uniq, counts = np.unique(ids, return_counts=True)
    for tid, count in zip(uniq, counts):
        if count < min_count:
            continue
        at = ids == tid
        hits = chosen[:, at].sum(axis=1)                          # [L, E]
        best = hits.argmax(axis=1)
        for li, layer in enumerate(traces[0].layers):
            rows.append({"token_id": int(tid), "token": str(texts[at][0]), "count": int(count),
                         "layer": int(layer), "expert": int(best[li]), "share": hits[li, best[li]] / count})
    return pd.DataFrame(rows, columns=["token_id", "token", "count", "layer", "expert", "share"])


# ---- two prompt sets --------------------------------------------------------------------
@dataclass
class LoadComparison:
    """Expert load of two prompt sets: load_a, load_b [moe_layer, E], their difference, the
    Jensen-Shannon divergence (bits) between the normalised loads per layer, and its control: the
    JSD between two halves of the same set (mean over both sets), what sampling alone gives."""

    layers: np.ndarray
    load_a: np.ndarray
    load_b: np.ndarray
    jsd: np.ndarray
    labels: tuple[str, str]
    jsd_halves: np.ndarray | None = None

    @property
    def difference(self) -> np.ndarray:
        return self.load_a - self.load_b

    def preferred(self, top: int = 3) -> pd.DataFrame:
        """For each layer, the experts most preferred by each set over the other."""
        rows = []
        for li, layer in enumerate(self.layers):
            d = self.difference[li]
            rows.append({"layer": int(layer),
                         f"{self.labels[0]} prefers": np.argsort(-d)[:top].tolist(),
                         f"{self.labels[1]} prefers": np.argsort(d)[:top].tolist(),
                         "JSD (bits)": round(float(self.jsd[li]), 4),
                         "JSD halves (bits)": None if self.jsd_halves is None else round(float(self.jsd_halves[li]), 4)})
        return pd.DataFrame(rows).set_index("layer")


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """JSD in bits between distributions along the last axis (inputs are normalised first)."""
    p = p / p.sum(-1, keepdims=True)
    q = q / q.sum(-1, keepdims=True)
    m = (p + q) / 2

    def kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, a * np.log2(a / b), 0.0).sum(-1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def compare_loads(a: RoutingTrace | Sequence[RoutingTrace], b: RoutingTrace | Sequence[RoutingTrace],
                  labels: tuple[str, str] = ("A", "B")) -> LoadComparison:
    la, lb = expert_load(a), expert_load(b)
    if not np.array_equal(la.layers, lb.layers) or la.load.shape != lb.load.shape:
        raise WorkbenchError("the two prompt sets were traced on different models.")
    halves = [_halves_jsd(_traces(x)) for x in (a, b)]
    control = None if any(h is None for h in halves) else (halves[0] + halves[1]) / 2
    return LoadComparison(la.layers, la.load, lb.load, jensen_shannon(la.load, lb.load), tuple(labels), control)


def _halves_jsd(traces: list[RoutingTrace]) -> np.ndarray | None:
    """JSD between the loads of the first and second half of a set's tokens (None under 4 tokens)."""
    chosen = np.concatenate([one_hot(t) for t in traces], axis=1)
    half = chosen.shape[1] // 2
    if half < 2:
        return None
    return jensen_shannon(chosen[:, :half].mean(axis=1) + 1e-12, chosen[:, half:2 * half].mean(axis=1) + 1e-12)


# ---- interventions ----------------------------------------------------------------------
@dataclass
class InterventionEffect:
    """How an intervention changes the model on one prompt.

    kl [token]: KL(original || changed) of the next-token distribution at each prompt position
    (nats); text / changed_text: greedy continuations without and with the change."""

    kl: np.ndarray
    tokens: list[str]
    text: str
    changed_text: str
    top_token: list[str]
    changed_top_token: list[str]

    @property
    def mean_kl(self) -> float:
        return float(self.kl.mean())

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"token": self.tokens, "KL": self.kl, "next (original)": self.top_token,
                             "next (changed)": self.changed_top_token})


def intervention_effect(model: "Model", prompt, intervention: Intervention,
                        max_new_tokens: int = 24) -> InterventionEffect:
    """Run `prompt` with and without `intervention` (same backend) and compare."""
    ids = model.prompt_ids(prompt, thinking=False)[0]
    base, changed = model.logits(ids), model.logits(ids, intervene=intervention)
    lp, lq = _log_softmax(base), _log_softmax(changed)
    kl = (np.exp(lp) * (lp - lq)).sum(-1)
    text = model.generate(ids, max_new_tokens=max_new_tokens).text
    changed_text = model.generate(ids, max_new_tokens=max_new_tokens, intervene=intervention).text
    decode = model.decode
    return InterventionEffect(kl=kl, tokens=[decode([int(t)]) for t in ids], text=text,
                              changed_text=changed_text,
                              top_token=[decode([int(t)]) for t in base.argmax(-1)],
                              changed_top_token=[decode([int(t)]) for t in changed.argmax(-1)])


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))
