"""`workbench.drift` (defined here): the same token ids through a reference and its quantized copies, on any
backends, and what changed: the next-token distribution (llama-perplexity's KL-divergence protocol),
expert routing per MoE layer, and the Gated DeltaNet state per linear layer. The maths lives in
`analysis/drift.py`; this module runs the models and keeps what the figures and the widget need.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .analysis import drift as ad
from .errors import WorkbenchError
from .trace import Trace

# What a candidate must share with the reference for its routing and state to be compared.
_SAME = ("layer_types", "hidden_size", "vocab_size", "num_experts", "num_experts_per_tok",
         "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim")


@dataclass
class DriftReport:
    """What `drift` measured. Tables are pandas; per-token arrays cover the scored positions of
    every chunk, in text order."""

    reference: str
    candidates: list[str]
    context: int
    chunks: int
    tokens: pd.DataFrame                       # one row per candidate: KLD, same top-1, Δp, PPL ratio
    routing: pd.DataFrame | None               # candidate x MoE layer: agreement, Jaccard, weight shift
    deltanet: pd.DataFrame | None              # candidate x linear layer: state / decay / beta error
    per_token: dict[str, ad.TokenDrift] = field(repr=False, default_factory=dict)
    predicted: list[str] = field(repr=False, default_factory=list)     # the token each scored row predicts
    top_text: dict[str, list[str]] = field(repr=False, default_factory=dict)  # each model's top-1 text
    experts: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # [moe_layer, scored, k]
    changes: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = field(repr=False, default_factory=dict)
    moe_layers: tuple[int, ...] = ()

    def __repr__(self) -> str:
        return (f"DriftReport({self.reference!r} vs {self.candidates}, {self.chunks} chunk(s) of "
                f"{self.context} tokens)\n{self.tokens.round(4).to_string(index=False)}")


def model_name(model) -> str:
    return f"{model.path.name} ({model.backend}, {model.dtype})"


def drift(reference, candidates, texts: str | Sequence[str], context: int = 512, routing: bool = True,
          deltanet: bool = True, progress: Callable[[int, int, str], None] | None = None) -> DriftReport:
    """Run `texts` through `reference` and each candidate (a Model, a list, or {name: Model}).

    The texts are encoded (each on its own, then concatenated) and cut into chunks of `context`
    tokens; each chunk runs from an empty cache and the second half is scored, as
    `llama-perplexity --kl-divergence -c <context>` does on the same text. Routing and DeltaNet are
    compared over every token of every chunk. `progress(done, total, what)` is called as models run.
    """
    named = _named(candidates)
    ref_name = model_name(reference)
    if not isinstance(context, (int, np.integer)) or isinstance(context, bool) or context < 4:
        raise WorkbenchError(f"context={context!r} is invalid: give the chunk length in tokens (>= 4; "
                             "llama-perplexity's -c, 512 by default).")
    ids = _encode(reference, texts)
    for name, model in named.items():
        _check_same_model(reference, model, name, ids, texts)
    n_chunks = len(ids) // context
    if n_chunks < 1:
        raise WorkbenchError(f"the text is {len(ids)} tokens, shorter than one chunk of context={context}: give "
                             "more text or a smaller context (llama-perplexity needs at least one full chunk too).")
    if context > min(m.context_length for m in [reference, *named.values()]):
        raise WorkbenchError(f"context={context} exceeds a model's context length: use a smaller context.")
    routing = routing and reference.spec.is_moe
    rows = ad.scored_rows(context)
    models = {ref_name: reference, **named}
    total, done = n_chunks * len(models) * (1 + int(routing or deltanet)), 0
    parts: dict[str, list[ad.TokenDrift]] = {n: [] for n in named}
    traces: dict[str, list] = {n: [] for n in models}
    for c in range(n_chunks):
        chunk = ids[c * context:(c + 1) * context]
        logits = {}
        for name, model in models.items():
            if progress:
                progress(done, total, f"chunk {c + 1}/{n_chunks}: {name} logits")
            logits[name] = model.logits(chunk)[rows]
            done += 1
            if routing or deltanet:
                if progress:
                    progress(done, total, f"chunk {c + 1}/{n_chunks}: {name} routing and state")
                gen = model.generate(chunk, max_new_tokens=1, ignore_eos=True,
                                     trace=Trace(routing=routing, deltanet=deltanet))
                traces[name].append(gen)
                done += 1
        nxt = chunk[rows.start + 1:rows.stop + 1]
        for name in named:
            parts[name].append(ad.token_drift(logits[ref_name], logits[name], nxt))
    if progress:
        progress(total, total, "done")
    per_token = {n: ad.TokenDrift.concat(p) for n, p in parts.items()}
    tok = reference.tokenizer
    predicted = [tok.decode([int(t)]) for c in range(n_chunks)
                 for t in ids[c * context:(c + 1) * context][rows.start + 1:rows.stop + 1]]
    top_text = {ref_name: [tok.decode([int(t)]) for t in next(iter(per_token.values())).top_reference]
                if per_token else []}
    top_text.update({n: [tok.decode([int(t)]) for t in d.top_candidate] for n, d in per_token.items()})
    report = DriftReport(reference=ref_name, candidates=list(named), context=context, chunks=n_chunks,
                         tokens=ad.token_table(per_token), routing=None, deltanet=None, per_token=per_token,
                         predicted=predicted, top_text=top_text, moe_layers=reference.spec.moe_layers)
    if routing:
        _routing(report, reference, traces, ref_name, named, rows)
    if deltanet:
        tables = []
        for name in named:
            for ref_gen, gen in zip(traces[ref_name], traces[name]):
                tables.append(ad.deltanet_error(ref_gen.deltanet, gen.deltanet).assign(candidate=name))
        report.deltanet = _by_layer(tables)
    return report


def _routing(report: DriftReport, reference, traces, ref_name: str, named, rows: slice) -> None:
    spec = reference.spec
    n = report.context
    cat = {name: (np.concatenate([g.routing.experts[:, :n] for g in gens], axis=1),
                  np.concatenate([g.routing.weights[:, :n] for g in gens], axis=1)) for name, gens in traces.items()}
    ref_e, ref_w = cat[ref_name]
    tables = []
    texts = [t for g in traces[ref_name] for t in g.routing.tokens[:n]]
    for name in named:
        e, w = cat[name]
        tables.append(ad.routing_agreement(ref_e, e, ref_w, w, spec.moe_layers, spec.num_experts).assign(candidate=name))
        report.changes[name] = ad.routing_changes(ref_e, e, texts, spec.moe_layers)
    report.routing = _by_layer(tables)
    # the experts of each scored row (the position whose output predicts the next token)
    scored = np.concatenate([np.arange(rows.start, rows.stop) + c * n for c in range(report.chunks)])
    report.experts = {name: e[:, scored] for name, (e, _) in cat.items()}


def _by_layer(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Per-chunk tables -> one row per (candidate, layer): means of the errors, maxima of the maxima."""
    table = pd.concat(tables, ignore_index=True)
    how = {c: ("max" if c.startswith("max") else "mean") for c in table.columns if c not in ("candidate", "layer")}
    return table.groupby(["candidate", "layer"], sort=False).agg(how).reset_index()


def _named(candidates) -> dict[str, object]:
    from .model import Model

    if isinstance(candidates, Model):
        candidates = [candidates]
    if isinstance(candidates, Mapping):
        named = dict(candidates)
    elif isinstance(candidates, (list, tuple)):
        named = {}
        for model in candidates:
            name = model_name(model) if isinstance(model, Model) else repr(model)
            named[name if name not in named else f"{name} #{len(named) + 1}"] = model
    else:
        raise WorkbenchError("candidates must be a loaded Model, a list of them, or {name: Model}.")
    if not named:
        raise WorkbenchError("give at least one candidate model to compare with the reference.")
    for name, model in named.items():
        if not isinstance(model, Model):
            raise WorkbenchError(f"candidate {name!r} is a {type(model).__name__}, not a loaded model: "
                                 "pass workbench.load(...) results.")
    return named


def _encode(model, texts) -> np.ndarray:
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(t, str) for t in texts):
        raise WorkbenchError("texts must be a string or a list of strings.")
    return np.concatenate([model.encode(t) for t in texts])


def _check_same_model(reference, model, name: str, ids: np.ndarray, texts) -> None:
    differ = [f for f in _SAME if getattr(reference.spec, f) != getattr(model.spec, f)]
    if differ:
        raise WorkbenchError(f"{name} is not a copy of the reference's architecture (they differ in "
                             f"{', '.join(differ)}): drift compares quantized copies of one model.")
    theirs = _encode(model, texts)
    if len(theirs) != len(ids) or not np.array_equal(theirs, ids):
        at = next((i for i, (a, b) in enumerate(zip(ids, theirs)) if a != b), min(len(ids), len(theirs)))
        raise WorkbenchError(f"the tokenizers disagree: {name} encodes the text differently from token {at} on "
                             "(a different vocabulary or tokenizer); the same token ids must reach every model.")
