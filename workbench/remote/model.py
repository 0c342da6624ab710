"""RemoteModel: the workbench's Model interface over an OpenAI-compatible server (vLLM, SGLang,
llama.cpp's server, mlx_lm.server), for what a server can do.

- A string or token ids go to `/v1/completions`; chat messages to `/v1/chat/completions` with the
  tools and `chat_template_kwargs: {"enable_thinking": ...}` (the server renders its template), or,
  with `chat_template="local"` (the default for llama-cpp-python's server, which reads that field
  only at start), rendered here by the checkpoint's own template and sent as prompt text.
- Streaming is the server's own SSE stream; `Stream.stop()` closes the socket, which ends the
  request on the server. Servers stream text, not token ids: a `Chunk.token_id` and `Chunk.tokens`
  are the chunk's number, and token counts come from the server's `usage`.
- Thinking: a server with a reasoning parser sends it apart (`reasoning_content` / `reasoning`);
  otherwise the `<think>` markup in the text is split as in-process.
- Tool calls: the server's structured `tool_calls` when it parses them, else the Qwen3-Coder XML in
  the answer, parsed by the workbench (calls inside reasoning are never run).
- Routing: `trace=Trace(routing=True)` asks for the engine's routed experts (a non-streamed request,
  as the engines document it) and returns a `RoutingTrace` of expert ids (weights unknown).
  Logits, DeltaNet state, attention and interventions stay inside the server: clear errors.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import WorkbenchError
from ..generation import Generation, Stats, checked_limits
from ..model import Chunk
from ..sampling import SamplingParams
from ..spec import ModelSpec
from ..thinking import ThinkingTracker, prompt_opens_thinking, split_thinking
from ..tools import ToolCall
from ..trace import Intervention, Trace
from . import routing as remote_routing
from .http import Endpoint, EventStream, ServerError, request_json
from .served import ENGINES, Served

FINISH = {"stop": "stop", "length": "length", "tool_calls": "stop", "function_call": "stop", "eos": "stop",
          "abort": "interrupted"}


class RemoteModel:
    """A model served by an OpenAI-compatible engine. `backend` is "remote"; `engine_name` says which
    engine answered ("vllm", "sglang", "llamacpp", "llama-cpp-python", "mlx_lm" or "unknown")."""

    backend = "remote"
    dtype = "served"
    fast_decode = False
    is_remote = True

    def __init__(self, endpoint: Endpoint, served: Served, spec: ModelSpec | None, tokenizer=None,
                 chat_template: str = "auto"):
        self.endpoint, self.served = endpoint, served
        self._spec, self.tokenizer = spec, tokenizer
        if chat_template not in ("auto", "server", "local"):
            raise WorkbenchError(f"chat_template={chat_template!r}: use 'server' (the server renders chats), 'local' "
                                 "(the workbench renders them and sends the prompt text) or 'auto'.")
        if chat_template == "local" and tokenizer is None:
            raise WorkbenchError(f"chat_template='local' needs the tokenizer of {served.id!r} on this machine; it is "
                                 "not: use chat_template='server'.")
        if chat_template == "auto":
            # llama-cpp-python's server reads chat_template_kwargs only at start, so thinking on/off per request
            # needs the chat rendered here (its template is in the GGUF file the workbench read).
            local = served.engine == "llama-cpp-python" and tokenizer is not None
            chat_template = "local" if local else "server"
        self.chat_template = chat_template
        # Whether the server sends reasoning apart from the answer (a reasoning parser): learnt from its
        # replies. Once known, an answer without reasoning is an answer, not an unfinished thought.
        self.separates_reasoning = False

    # ---- what it is ---------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.served.id

    @property
    def engine_name(self) -> str:
        return self.served.engine

    @property
    def device(self) -> str:
        return self.endpoint.url

    @property
    def path(self) -> Path:
        return Path(self.served.id)

    @property
    def spec(self) -> ModelSpec:
        if self._spec is None:
            raise WorkbenchError(
                f"the server's model id {self.served.id!r} names no Qwen3.5 model the workbench knows, so its "
                "layers and experts are unknown. generate, stream, chat and bench work without it; for routing "
                "and planning connect with spec='Qwen/Qwen3.5-35B-A3B' (the released name of the served model).")
        return self._spec

    @property
    def has_spec(self) -> bool:
        return self._spec is not None

    @property
    def kernels(self) -> dict[str, str]:
        return {"server": ENGINES.get(self.served.engine, self.served.engine), "url": self.endpoint.url}

    @property
    def context_length(self) -> int:
        if self.served.max_model_len:
            return self.served.max_model_len
        return self._spec.max_position_embeddings if self._spec is not None else 1 << 31

    def __repr__(self) -> str:
        what = self._spec.summary() if self._spec is not None else "spec unknown"
        return f"RemoteModel({self.served.id!r} on {self.engine_name} at {self.endpoint.url}; {what})"

    # ---- what stays in the server -------------------------------------------------------
    def logits(self, *args, **kwargs):
        raise WorkbenchError("a serving engine does not return full logits: load the model in-process "
                             "(workbench.load) for logits, drift and interventions.")

    def encode(self, text: str) -> np.ndarray:
        if self.tokenizer is None:
            raise WorkbenchError(f"the tokenizer of {self.served.id!r} is not on this machine; the server tokenizes.")
        return self.tokenizer.encode(text)

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        if self.tokenizer is None:
            raise WorkbenchError(f"the tokenizer of {self.served.id!r} is not on this machine; the server tokenizes.")
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    # ---- generation ---------------------------------------------------------------------
    def generate(self, prompt, max_new_tokens: int = 256, **options) -> Generation:
        """As `Model.generate`, answered by the server (see the module docstring)."""
        stream = self.stream(prompt, max_new_tokens=max_new_tokens, **options)
        for _ in stream:
            pass
        return stream.generation

    def stream(self, prompt, max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
               top_k: int = 0, min_p: float = 0.0, presence_penalty: float = 0.0, seed: int | None = None,
               stop: str | Sequence[str] | None = None, thinking: bool = True, tools: list[dict] | None = None,
               ignore_eos: bool = False, trace: Trace | None = None, intervene: Intervention | None = None,
               raw_control_tokens: bool = False, prompt_cache: bool = False) -> "RemoteStream":
        """As `Model.stream`: yields text `Chunk`s as the server sends them; `.generation` at the end.
        `prompt_cache` is the server's business (vLLM and SGLang reuse prefixes themselves): ignored."""
        sampling = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                                  presence_penalty=presence_penalty, seed=seed)
        stops = checked_limits(max_new_tokens, stop)
        if intervene is not None:
            raise WorkbenchError("a serving engine cannot change its routing per request: interventions run "
                                 "in-process (workbench.load).")
        if raw_control_tokens:
            raise WorkbenchError("raw_control_tokens applies in-process: the server tokenizes messages with its "
                                 "own rules.")
        routing = self._check_trace(trace)
        route, body, opened, prompt_ids = self._request(prompt, thinking, tools)
        # Every setting is sent, "off" included: servers have defaults of their own (llama.cpp: top-k 40,
        # min-p 0.05, repeat penalty 1.1), and the same settings must mean the same sampling everywhere.
        off_k = -1 if self.engine_name in ("vllm", "sglang") else 0
        body.update(max_tokens=int(max_new_tokens), temperature=float(sampling.temperature), top_p=float(sampling.top_p),
                    top_k=int(sampling.top_k) or off_k, min_p=float(sampling.min_p),
                    presence_penalty=float(sampling.presence_penalty))
        if self.engine_name in ("llamacpp", "llama-cpp-python"):
            body["repeat_penalty"] = 1.0
        if sampling.seed is not None:
            body["seed"] = int(sampling.seed)
        if stops:
            body["stop"] = stops
        if ignore_eos:
            body["ignore_eos"] = True  # vLLM and SGLang; servers without it stop at end-of-sequence
        if routing:
            body["return_routed_experts"] = True  # SGLang asks per request; vLLM returns it when started so
            body["return_token_ids"] = True       # vLLM: the ids the routing rows belong to
        else:
            body.update(stream=True, stream_options={"include_usage": True})
        return RemoteStream(self, route, body, opened, prompt_ids, routing)

    def chat(self, messages: list[dict], tools: Sequence = (), max_rounds: int = 5, thinking: bool = False,
             max_new_tokens: int = 512, on_event=None, **sampling):
        """As `Model.chat`: tools are plain Python functions, run here; the server generates."""
        from ..chat import ChatLoop
        return ChatLoop(self, messages, tools, max_rounds=max_rounds, thinking=thinking,
                        max_new_tokens=max_new_tokens, **sampling).run(on_event)

    # ---- helpers ------------------------------------------------------------------------
    def _check_trace(self, trace: Trace | None) -> bool:
        if trace is None:
            return False
        if not isinstance(trace, Trace):
            raise WorkbenchError(f"trace={trace!r}: pass workbench.Trace(routing=True).")
        if trace.deltanet or trace.attention or trace.router_probs:
            raise WorkbenchError("a serving engine returns the experts each token was routed to, nothing more: "
                                 "use Trace(routing=True); DeltaNet state, attention maps and router probabilities "
                                 "need the model in-process (workbench.load).")
        if not trace.routing:
            return False
        if not self.spec.is_moe:
            raise WorkbenchError(f"{self.served.id!r} is dense (no experts): there is no routing to trace.")
        return True

    def _request(self, prompt, thinking: bool, tools) -> tuple[str, dict, bool, np.ndarray | None]:
        """(route, body, whether the answer starts inside <think>, prompt ids where known)."""
        body: dict[str, Any] = {"model": self.served.id}
        if isinstance(prompt, str):
            if tools:
                raise WorkbenchError("tools need a chat: pass a list of messages, not a string.")
            if not prompt:
                raise WorkbenchError("the prompt is empty: give at least one token of text.")
            body["prompt"] = prompt
            ids = self.tokenizer.encode(prompt) if self.tokenizer is not None else None
            return "/completions", body, False, ids
        if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
            if self.chat_template == "local":
                text = self.tokenizer.apply_chat_template(prompt, tools=tools or None, enable_thinking=bool(thinking),
                                                          add_generation_prompt=True)
                body["prompt"] = text
                return "/completions", body, prompt_opens_thinking(text), self.tokenizer.encode(text)
            body["messages"] = [_wire_message(m) for m in prompt]
            if tools:
                body["tools"] = list(tools)
            body["chat_template_kwargs"] = {"enable_thinking": bool(thinking)}
            return "/chat/completions", body, bool(thinking), None
        if isinstance(prompt, (list, tuple, np.ndarray)) and len(prompt) and not isinstance(prompt[0], dict):
            ids = np.asarray(prompt)
            if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) or ids.dtype == bool or (ids < 0).any():
                raise WorkbenchError("token ids must be one flat sequence of whole numbers >= 0.")
            body["prompt"] = [int(t) for t in ids]
            return "/completions", body, False, ids.astype(np.int64)
        raise WorkbenchError(f"prompt of type {type(prompt).__name__} is not understood: pass a string, a list of chat "
                             "messages ({'role': 'user', 'content': ...}), or a list of token ids.")


def _wire_message(message: dict) -> dict:
    """A chat message as the server reads it. Reasoning of earlier turns is left out, as the
    Qwen3.5 template drops it from history anyway."""
    out = {k: v for k, v in message.items() if k != "reasoning_content"}
    if out.get("content") is None:
        out["content"] = ""
    return out


class RemoteStream:
    """What `RemoteModel.stream` returns: iterate for `Chunk`s; `.generation` is set at the end;
    `.stop()` (any thread) closes the request. Runs once, like `Model.stream`'s `Stream`."""

    def __init__(self, model: RemoteModel, route: str, body: dict, opened: bool,
                 prompt_ids: np.ndarray | None, routing: bool):
        self.model, self.route, self.body = model, route, body
        self._opened, self._prompt_ids, self._routing = opened, prompt_ids, routing
        self._events: EventStream | None = None
        self._stopped = False
        self._chunks: Iterator[Chunk] | None = None
        self.generation: Generation | None = None

    def stop(self) -> None:
        self._stopped = True
        events = self._events
        if events is not None:
            events.close()

    def __iter__(self) -> Iterator[Chunk]:
        if self._chunks is None:
            self._chunks = self._run()
        return self._chunks

    def _run(self) -> Iterator[Chunk]:
        start = time.perf_counter()
        if self._stopped:
            self.generation = self._result("", None, [], "interrupted", {}, start, [], None)
            return
        if self._routing:
            yield from self._whole(start)
            return
        self._events = events = EventStream(self.model.endpoint, self.route, self.body)
        if self._stopped:  # Stop arrived while the request was being sent
            events.close()
        tracker = ThinkingTracker(self._opened)
        content, reasoning, stamps = [], [], []
        calls: dict[int, dict] = {}
        usage: dict = {}
        finish = None
        separate_reasoning = False
        n = size = 0
        limit = 2 * int(self.body["max_tokens"]) + 64
        try:
            for event in events:
                if isinstance(event.get("usage"), dict):
                    usage = event["usage"]
                for choice in event.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if "text" in choice and not delta:  # /completions
                        delta = {"content": choice.get("text")}
                    elif "message" in choice and not delta:  # a server that did not stream
                        delta = dict(choice["message"])
                    pieces: list[tuple[str, bool]] = []
                    thought = delta.get("reasoning_content") or delta.get("reasoning")
                    if thought:
                        separate_reasoning = self.model.separates_reasoning = True
                        reasoning.append(thought)
                        pieces.append((thought, True))
                    text = delta.get("content")
                    if text:
                        content.append(text)
                        apart = separate_reasoning or self.model.separates_reasoning
                        pieces += [(text, False)] if apart else tracker.feed(text)
                    for call in delta.get("tool_calls") or []:
                        _merge_call(calls, call)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                    if pieces or delta.get("tool_calls"):
                        stamps.append(time.perf_counter())
                        n += 1
                        size += sum(len(p) for p, _ in pieces)
                        if n > limit or size > 256 * limit:  # a server that does not stop is not followed forever
                            raise ServerError(f"{events.where} sent {n} chunks ({size:,} characters) for a request of "
                                              f"{self.body['max_tokens']} tokens and did not stop: the stream is "
                                              "closed. Is it an OpenAI-compatible server?")
                    for piece, is_thinking in pieces:
                        yield Chunk(piece, is_thinking, n, n)
        except WorkbenchError:
            if not self._stopped:
                raise
        finally:
            events.close()
        if self._stopped:
            reason = "interrupted"
        elif finish is None:
            how = ("the server ended it early ([DONE] without a finish reason; llama-cpp-python's server does this "
                   "to a stream when another request arrives, unless started with --interrupt_requests False)"
                   if events.done else "the server closed the connection; see its log")
            raise ServerError(f"the stream from {events.where} ended mid-way, after {n} chunks: {how}.")
        else:
            reason = FINISH.get(finish, "stop")
        raw = "".join(content)
        thinking = "".join(reasoning) if separate_reasoning or self.model.separates_reasoning else None
        self.generation = self._result(raw, thinking, stamps, reason, usage, start, _calls(calls), None)

    def _whole(self, start: float) -> Iterator[Chunk]:
        """A traced request: one non-streamed answer with the routing beside the text."""
        body = request_json(self.model.endpoint, "POST", self.route, self.body)
        done = time.perf_counter()
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ServerError(f"{self.model.endpoint.url}{self.route} answered without choices: not an "
                              "OpenAI-compatible completion.")
        choice = choices[0]
        message = choice.get("message") or {}
        raw = choice.get("text") if "text" in choice else (message.get("content") or "")
        thought = message.get("reasoning_content") or message.get("reasoning")
        if thought:
            self.model.separates_reasoning = True
        elif self.model.separates_reasoning:
            thought = ""
        gen_ids = choice.get("token_ids")
        prompt_ids = body.get("prompt_token_ids", choice.get("prompt_token_ids"))
        prompt_ids = np.asarray(prompt_ids, np.int64) if prompt_ids is not None else self._prompt_ids
        rows, first = remote_routing.from_response(body, choice, self.model.spec,
                                                   len(prompt_ids) if prompt_ids is not None else None)
        usage = body.get("usage") or {}
        calls = {}
        for i, call in enumerate(message.get("tool_calls") or []):
            _merge_call(calls, dict(call, index=i))
        self.generation = self._result(raw or "", thought, [done], FINISH.get(choice.get("finish_reason"), "stop"),
                                       usage, start, _calls(calls), (rows, first, prompt_ids, gen_ids))
        for piece, is_thinking in ([(thought, True)] if thought else []) + \
                (ThinkingTracker(self._opened and thought is None).feed(raw) if raw else []):
            yield Chunk(piece, is_thinking, 1, 1)

    def _result(self, raw: str, thinking: str | None, stamps: list[float], reason: str, usage: dict,
                start: float, calls: list[ToolCall] | None, routed) -> Generation:
        if thinking is None:
            thought, answer = split_thinking(raw, self._opened)
        else:
            thought, answer = (thinking.strip() or None), raw.lstrip("\n")
        n_new = usage.get("completion_tokens")
        n_prompt = usage.get("prompt_tokens")
        n_new = int(n_new) if isinstance(n_new, int) else len(stamps)
        n_prompt = int(n_prompt) if isinstance(n_prompt, int) else \
            (len(self._prompt_ids) if self._prompt_ids is not None else 0)
        end = stamps[-1] if stamps else time.perf_counter()
        streamed = not self._routing and bool(stamps)
        ttft = stamps[0] - start if streamed else float("nan")
        decode_s = end - stamps[0] if streamed else 0.0
        itl = np.diff(np.asarray(stamps)) if streamed else np.zeros(0)
        stats = Stats(prompt_tokens=n_prompt, new_tokens=n_new, time_to_first_token_s=ttft,
                      prefill_tokens_per_s=n_prompt / ttft if ttft > 0 else float("nan"),
                      decode_tokens_per_s=(n_new - 1) / decode_s if n_new > 1 and decode_s > 0 else float("nan"),
                      total_s=end - start, peak_memory_bytes=None,
                      decode_path=f"server: {ENGINES.get(self.model.engine_name, self.model.engine_name)}",
                      inter_token_s=itl)
        prompt_ids = self._prompt_ids if self._prompt_ids is not None else np.zeros(0, np.int64)
        token_ids = np.zeros(0, np.int64)
        trace = None
        if routed is not None:
            rows, first, ids_prompt, ids_new = routed
            prompt_ids = ids_prompt if ids_prompt is not None else prompt_ids
            token_ids = np.asarray(ids_new if ids_new is not None else [], np.int64)
            trace = self._trace(rows, first, prompt_ids, token_ids)
        return Generation(text=answer, thinking=thought, raw_text=raw, token_ids=token_ids, prompt_ids=prompt_ids,
                          finish_reason=reason, stats=stats, routing=trace, tool_calls=calls or None)

    def _trace(self, rows: np.ndarray, first: int, prompt_ids: np.ndarray, new_ids: np.ndarray):
        tok = self.model.tokenizer
        n_prompt = len(prompt_ids)
        if n_prompt == 0 and first == 0:
            raise WorkbenchError("the server returned routing but not the prompt's token ids, and the tokenizer is "
                                 "not on this machine, so the rows cannot be matched to tokens. vLLM returns ids "
                                 "with return_token_ids (0.10.2 and later).")
        ids = np.concatenate([prompt_ids, new_ids]).astype(np.int64)
        if len(ids) < first + len(rows):  # ids unknown past the prompt: rows still placed, tokens unnamed
            ids = np.concatenate([ids, np.full(first + len(rows) - len(ids), -1, np.int64)])
        texts = [tok.decode([int(t)]) if tok is not None and t >= 0 else ("?" if t < 0 else f"<{t}>") for t in ids]
        return remote_routing.trace(rows, first, self.model.spec, ids, texts, n_prompt)


def _merge_call(calls: dict[int, dict], delta: dict) -> None:
    """Accumulate one streamed tool-call delta (name once, arguments in fragments)."""
    i = int(delta.get("index", len(calls)))
    call = calls.setdefault(i, {"name": "", "arguments": ""})
    fn = delta.get("function") or {}
    if fn.get("name"):
        call["name"] = fn["name"]
    args = fn.get("arguments")
    if isinstance(args, dict):
        call["arguments"] = json.dumps(args)
    elif isinstance(args, str):
        call["arguments"] += args


def _calls(calls: dict[int, dict]) -> list[ToolCall]:
    """The server's structured calls as ToolCalls (arguments parsed; a bad JSON is the call's error)."""
    out = []
    for _, c in sorted(calls.items()):
        raw = c["arguments"] or "{}"
        try:
            args = json.loads(raw)
            error = None if isinstance(args, dict) else "the arguments are not a JSON object"
        except ValueError:
            args, error = {}, f"the arguments are not valid JSON: {raw[:200]!r}"
        out.append(ToolCall(c["name"], args if isinstance(args, dict) else {}, raw=raw, error=error))
    return out
