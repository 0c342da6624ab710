"""What quantization changes, from the arrays two runs of the same tokens produce (framework-free).

Next-token statistics follow `llama-perplexity --kl-divergence` exactly, so the figures can be held
against llama.cpp's own on the same file and text: the text's tokens are cut into chunks of
`context` tokens, each chunk runs from an empty cache, and the positions of its second half are
scored (logits at positions context/2 .. context-2, each predicting the next token of the text).
Per scored position: KLD(reference || candidate) over the whole vocabulary, whether the two top-1
tokens agree, Δp = p_candidate(next token) - p_reference(next token), and both negative
log-likelihoods. Means carry llama.cpp's uncertainty, sqrt(var / (n - 1)); percentiles interpolate
linearly as it does. (llama.cpp stores the reference log-probs as 16-bit values over 16 nats, so its
KLD drops probabilities below e^-16 and may show tiny negative values; here they are exact float64.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PERCENTILES = (0.90, 0.95, 0.99, 0.999)


def scored_rows(context: int) -> slice:
    """Logit rows of a chunk that are scored: context/2 .. context-2 (llama-perplexity's `first`)."""
    return slice(context // 2, context - 1)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """[T, V] -> float64 log-probabilities."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass
class TokenDrift:
    """One candidate against the reference, per scored position [n]."""

    kld: np.ndarray
    same_top: np.ndarray          # bool
    p_diff: np.ndarray            # p_candidate(next) - p_reference(next)
    nll_reference: np.ndarray
    nll_candidate: np.ndarray
    top_reference: np.ndarray     # top-1 token ids
    top_candidate: np.ndarray

    @classmethod
    def concat(cls, parts: list["TokenDrift"]) -> "TokenDrift":
        return cls(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__})


def token_drift(reference: np.ndarray, candidate: np.ndarray, next_ids: np.ndarray) -> TokenDrift:
    """reference, candidate logits [n, V] at the scored positions; next_ids [n] the text's next tokens."""
    lr, lc = log_softmax(reference), log_softmax(candidate)
    pr = np.exp(lr)
    rows = np.arange(len(next_ids))
    nll_r, nll_c = -lr[rows, next_ids], -lc[rows, next_ids]
    top_r, top_c = lr.argmax(-1), lc.argmax(-1)
    return TokenDrift(kld=(pr * (lr - lc)).sum(-1), same_top=top_r == top_c,
                      p_diff=np.exp(-nll_c) - np.exp(-nll_r), nll_reference=nll_r, nll_candidate=nll_c,
                      top_reference=top_r, top_candidate=top_c)


def _mean_and_uncertainty(x: np.ndarray) -> tuple[float, float]:
    """llama.cpp's mean_and_uncertainty: the mean and sqrt(var / (n - 1)) (0 for n <= 10)."""
    n = len(x)
    mean = float(x.mean())
    var = float((x * x).mean() - mean * mean)
    return mean, (np.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0)


def token_table(drifts: dict[str, TokenDrift]) -> pd.DataFrame:
    """One row per candidate: llama-perplexity's KL-divergence summary."""
    rows = []
    for name, d in drifts.items():
        kld, kld_err = _mean_and_uncertainty(d.kld)
        log_ratio = d.nll_candidate.mean() - d.nll_reference.mean()
        row = {"candidate": name, "tokens": len(d.kld), "mean KLD": kld, "KLD ±": kld_err,
               "median KLD": float(np.median(d.kld))}
        row.update({f"{q:.1%} KLD".replace(".0%", "%"): float(np.percentile(d.kld, 100 * q)) for q in PERCENTILES})
        row.update({"max KLD": float(d.kld.max()), "same top-1": float(d.same_top.mean()),
                    "RMS Δp": float(np.sqrt((d.p_diff ** 2).mean())), "mean Δp": float(d.p_diff.mean()),
                    "PPL reference": float(np.exp(d.nll_reference.mean())),
                    "PPL candidate": float(np.exp(d.nll_candidate.mean())), "PPL ratio": float(np.exp(log_ratio))})
        rows.append(row)
    return pd.DataFrame(rows)


# ---- routing ----------------------------------------------------------------------------------
def routing_agreement(reference: np.ndarray, candidate: np.ndarray, ref_weights: np.ndarray,
                      cand_weights: np.ndarray, layers, num_experts: int) -> pd.DataFrame:
    """Per MoE layer, over the same tokens. experts, weights [layer, token, k].

    top-k set agreement: share of tokens routed to exactly the same experts; top-1: the same first
    expert; Jaccard: |A ∩ B| / |A ∪ B| of the two sets, averaged; weight shift: half the L1 distance
    between the two renormalised weight vectors over all experts (0 = same mix, 1 = disjoint)."""
    same_set = (np.sort(reference, -1) == np.sort(candidate, -1)).all(-1)             # [L, T]
    top1 = reference[..., 0] == candidate[..., 0]
    jaccard = _jaccard(reference, candidate)
    shift = 0.5 * np.abs(_dense(reference, ref_weights, num_experts) -
                         _dense(candidate, cand_weights, num_experts)).sum(-1)
    return pd.DataFrame({"layer": list(layers), "top-k set agreement": same_set.mean(-1),
                         "top-1 agreement": top1.mean(-1), "mean Jaccard": jaccard.mean(-1),
                         "weight shift": shift.mean(-1)})


def _jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = (a[..., :, None] == b[..., None, :]).any(-1).sum(-1)
    k = a.shape[-1]
    return inter / (2 * k - inter)


def _dense(experts: np.ndarray, weights: np.ndarray, num_experts: int) -> np.ndarray:
    """[..., k] ids and weights -> [..., E] weights over all experts."""
    out = np.zeros((*experts.shape[:-1], num_experts), dtype=np.float64)
    np.put_along_axis(out, experts.astype(np.int64), weights.astype(np.float64), axis=-1)
    return out


def routing_changes(reference: np.ndarray, candidate: np.ndarray, tokens: list[str], layers,
                    top: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tokens whose expert sets changed most (lowest Jaccard summed over layers), and per
    expert how often the candidate dropped it from / added it to a token's set."""
    jac = _jaccard(reference, candidate)                                               # [L, T]
    order = np.argsort(jac.sum(0), kind="stable")[:top]
    worst = pd.DataFrame({"position": order, "token": [tokens[i] for i in order],
                          "layers changed": (jac[:, order] < 1).sum(0),
                          "mean Jaccard": jac[:, order].mean(0)})
    e = int(max(reference.max(), candidate.max())) + 1
    dropped, added = np.zeros(e, dtype=np.int64), np.zeros(e, dtype=np.int64)
    in_ref = (reference[..., :, None] == np.arange(e)).any(-2)                         # [L, T, E]
    in_cand = (candidate[..., :, None] == np.arange(e)).any(-2)
    dropped += (in_ref & ~in_cand).sum((0, 1))
    added += (in_cand & ~in_ref).sum((0, 1))
    experts = pd.DataFrame({"expert": np.arange(e), "dropped": dropped, "added": added})
    experts = experts[(experts.dropped > 0) | (experts.added > 0)]
    return worst, experts.sort_values(["dropped", "added"], ascending=False).reset_index(drop=True)


# ---- DeltaNet -----------------------------------------------------------------------------------
def deltanet_error(reference, candidate) -> pd.DataFrame:
    """Per linear layer, over the same tokens (two DeltaNetTraces): the relative error of the state
    norm (mean over tokens and heads of |a - b| / |b|), and the largest change of decay and beta."""
    a_norm, b_norm = candidate.state_norm.astype(np.float64), reference.state_norm.astype(np.float64)
    rel = np.abs(a_norm - b_norm) / np.maximum(np.abs(b_norm), 1e-12)
    out = pd.DataFrame({"layer": list(reference.layers), "state norm rel. error": rel.mean((1, 2)),
                        "max |Δ decay|": np.abs(candidate.decay - reference.decay).max((1, 2)),
                        "max |Δ beta|": np.abs(candidate.beta - reference.beta).max((1, 2))})
    if (reference.final_state is not None and candidate.final_state is not None
            and len(reference.final_state) == len(out)):
        diff = np.linalg.norm((candidate.final_state - reference.final_state).reshape(len(out), -1), axis=1)
        out["final state rel. error"] = diff / np.maximum(
            np.linalg.norm(reference.final_state.reshape(len(out), -1), axis=1), 1e-12)
    return out
