"""Expert routing as serving engines return it -> `[token, moe_layer, k]` int arrays, and a
`RoutingTrace` for the workbench's routing views.

Followed (each decoder is tested against responses laid out as these documents show):
- vLLM, `vllm serve ... --enable-return-routed-experts` (docs: "Routed Experts Replay", v0.21.0;
  "Routed Experts Return (R3)", latest): `prompt_routed_experts` at the response level, shape
  [prompt_len, moe_layers, top_k], and `routed_experts` on each choice, [gen_len, moe_layers,
  top_k]; int16 expert ids. Encodings across versions: nested JSON lists; a base64 string of a
  `.npy` file (vllm.utils.serial_utils.numpy2base64); base64 of raw int32. Positions served from
  the prefix cache come back as -1 (their routing was computed by an earlier request).
- SGLang, `--enable-return-routed-experts` with `return_routed_experts: true` in the request
  (PRs 12162, 17434): `meta_info["routed_experts"]` on `/generate`, `sgl_ext.routed_experts` on
  the `/v1` choices; base64 of raw int32 reshaped to (-1, num_layers, top_k), covering the
  forwarded tokens [0, prompt + output - 1) (the last sampled token is never forwarded);
  `routed_experts_start_len` in the request skips that many leading tokens.
The engines report expert ids only: the trace's weights and shared-expert gates are NaN (unknown).
"""
from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np

from ..errors import WorkbenchError
from ..records import RoutingTrace
from ..spec import ModelSpec

NOT_RETURNED = ("the server returned no expert routing. vLLM returns it when started with "
                "`vllm serve MODEL --enable-return-routed-experts` (non-streaming requests); SGLang with "
                "`--enable-return-routed-experts` (the workbench asks for it per request). mlx_lm.server and "
                "llama.cpp's server do not return routing: load the model in-process (workbench.load) to trace it.")


def decode(value: Any, moe_layers: int | None, top_k: int | None, what: str = "routed_experts") -> np.ndarray:
    """One engine field -> `[token, moe_layer, k]` int32 (-1 where the engine did not compute it).

    `value`: nested lists, a base64 `.npy` file, or base64 raw int32 (which needs `moe_layers` and
    `top_k` to be reshaped)."""
    if isinstance(value, dict):  # {"data": ..., "shape": [...], "dtype": ...}: a self-describing envelope
        data = decode(value.get("data"), moe_layers, top_k, what)
        shape = value.get("shape")
        if shape is not None:
            try:
                data = data.reshape([int(s) for s in shape])
            except (ValueError, TypeError):
                raise WorkbenchError(f"{what}: shape {shape!r} does not fit {data.size} expert ids.") from None
        return _checked(data, moe_layers, top_k, what)
    if isinstance(value, list):
        try:
            array = np.asarray(value, dtype=np.int64)
        except (ValueError, TypeError):
            raise WorkbenchError(f"{what}: the lists are ragged or hold non-integers, not [tokens, layers, k].") from None
        if array.size == 0:
            array = array.reshape(0, moe_layers or 0, top_k or 0)
        return _checked(array, moe_layers, top_k, what)
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise WorkbenchError(f"{what}: a string that is not base64 ({value[:40]!r}...).") from None
        if raw.startswith(b"\x93NUMPY"):
            try:
                array = np.load(io.BytesIO(raw), allow_pickle=False)
            except (ValueError, OSError):
                raise WorkbenchError(f"{what}: a damaged .npy payload.") from None
            return _checked(array, moe_layers, top_k, what)
        if len(raw) % 4:
            raise WorkbenchError(f"{what}: {len(raw)} bytes are not whole int32 values.")
        flat = np.frombuffer(raw, dtype="<i4")
        if not moe_layers or not top_k:
            raise WorkbenchError(f"{what} is raw int32 without a shape: the model's MoE layer count and top-k are "
                                 "needed; connect with spec='Qwen/Qwen3.5-...' naming the served model.")
        if flat.size % (moe_layers * top_k):
            raise WorkbenchError(f"{what}: {flat.size} ids are not whole tokens of {moe_layers} layers x top-{top_k}: "
                                 "is the served model the one the spec names?")
        return _checked(flat.reshape(-1, moe_layers, top_k), moe_layers, top_k, what)
    raise WorkbenchError(f"{what}: {type(value).__name__} is none of the encodings the engines use "
                         "(nested lists, base64 .npy, base64 int32).")


def _checked(array: np.ndarray, moe_layers, top_k, what: str) -> np.ndarray:
    if array.ndim != 3:
        raise WorkbenchError(f"{what} has shape {array.shape}, not [tokens, moe_layers, top_k].")
    if moe_layers and array.shape[1] != moe_layers or top_k and array.shape[2] != top_k:
        raise WorkbenchError(f"{what} has shape {array.shape}: [tokens, {moe_layers}, {top_k}] was expected for this "
                             "model. Is the server serving the model the spec names?")
    if not np.issubdtype(array.dtype, np.integer):
        raise WorkbenchError(f"{what} holds {array.dtype} values, not expert ids.")
    return array.astype(np.int32)


def from_response(body: dict, choice: dict, spec: ModelSpec | None, prompt_len: int | None,
                  start_len: int = 0) -> tuple[np.ndarray, int]:
    """The routing in one completion response -> (`[row, moe_layer, k]` rows, position of the first
    row in the request's token sequence). Rows run over prompt tokens, then generated ones.

    vLLM: `prompt_routed_experts` + the choice's `routed_experts`. SGLang: the choice's
    `sgl_ext.routed_experts` (or `/generate`'s `meta_info.routed_experts`), one array from
    `start_len`. Raises with the server flag to turn on when there is none."""
    layers = len(spec.moe_layers) if spec is not None and spec.is_moe else None
    k = spec.num_experts_per_tok if spec is not None and spec.is_moe else None
    sgl = (choice.get("sgl_ext") or {}).get("routed_experts") if isinstance(choice.get("sgl_ext"), dict) else None
    if sgl is None and isinstance(body.get("meta_info"), dict):
        sgl = body["meta_info"].get("routed_experts")
    if sgl is not None:
        return decode(sgl, layers, k, "sgl_ext.routed_experts"), int(start_len)
    generated = choice.get("routed_experts")
    prompt = body.get("prompt_routed_experts", choice.get("prompt_routed_experts"))
    if generated is None and prompt is None:
        raise WorkbenchError(NOT_RETURNED)
    gen_rows = decode(generated, layers, k, "routed_experts") if generated is not None else None
    parts = []
    if prompt is not None:
        p = decode(prompt, layers, k, "prompt_routed_experts")
        if prompt_len is not None and len(p) != prompt_len:
            raise WorkbenchError(f"prompt_routed_experts has {len(p)} rows but the prompt has {prompt_len} tokens.")
        parts.append(p)
    elif prompt_len:
        # Only generated rows: the prompt's rows are unknown (-1), so positions still line up.
        parts.append(np.full((prompt_len, *gen_rows.shape[1:]), -1, np.int32))
    if gen_rows is not None:
        parts.append(gen_rows)
    return np.concatenate(parts, axis=0), 0


def trace(rows: np.ndarray, first: int, spec: ModelSpec, token_ids: np.ndarray, texts: list[str],
          n_prompt: int) -> RoutingTrace:
    """A RoutingTrace of the rows an engine reported (`[row, moe_layer, k]`, row r = token first + r).

    Rows the engine did not compute (-1: vLLM's prefix-cache hits) and rows without a token are left
    out; `positions` keeps each kept row's place in the request. Weights and shared gates: NaN."""
    if not spec.is_moe:
        raise WorkbenchError("this model is dense (no experts): there is no routing to trace.")
    n = min(len(rows), max(0, len(token_ids) - first))
    rows = rows[:n]
    positions = np.arange(first, first + n)
    known = (rows >= 0).all(axis=(1, 2))
    if (rows >= spec.num_experts).any():
        raise WorkbenchError(f"the server reported expert ids up to {int(rows.max())}, but the model has "
                             f"{spec.num_experts} experts: is it serving the model the spec names?")
    rows, positions = rows[known], positions[known]
    experts = np.ascontiguousarray(rows.transpose(1, 0, 2))  # [moe_layer, token, k]
    shape = experts.shape
    return RoutingTrace(
        experts=experts, weights=np.full(shape, np.nan, np.float32),
        shared_gate=np.full(shape[:2], np.nan, np.float32),
        layers=np.asarray(spec.moe_layers, dtype=np.int64), token_ids=np.asarray(token_ids)[positions].astype(np.int64),
        tokens=np.asarray([texts[p] for p in positions], dtype=object).astype(str),
        phase=np.where(positions < n_prompt, "prompt", "decode"), num_experts=spec.num_experts,
        positions=positions.astype(np.int64))
