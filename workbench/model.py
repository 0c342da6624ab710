"""Model: the one interface over every backend."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .backends.base import Backend
from .capture import build_records, plan_probes
from .errors import WorkbenchError
from .generation import DecodeLoop, Generation, checked_limits
from .prompt_cache import PromptCache
from .sampling import SamplingParams
from .spec import ModelSpec
from .thinking import ThinkingTracker, prompt_opens_thinking, split_thinking
from .tokenizer import Tokenizer
from .trace import Intervention, Trace

# Draft tokens per step by default where speculation pays (see Model.speculative); Qwen's and
# vLLM's own examples for Qwen3.5's MTP layer use 2 or 3.
DEFAULT_DRAFTS = 2


class Chunk(str):
    """A piece of streamed text; `.thinking` says whether it belongs to the reasoning part,
    `.token_id` which token completed it, `.tokens` how many tokens the generation had made by then
    (count tokens with it: a token that repeats has the same id, and a token whose text is held back,
    a possible stop string or half a character, comes out with a later one)."""

    thinking: bool = False
    token_id: int = -1
    tokens: int = 0

    def __new__(cls, text: str, thinking: bool, token_id: int, tokens: int):
        self = super().__new__(cls, text)
        self.thinking, self.token_id, self.tokens = thinking, token_id, tokens
        return self


class Stream:
    """What `Model.stream` returns: iterate for `Chunk`s; `.generation` is set at the end;
    `.stop()` (from another thread, a widget callback; before or while iterating) ends it after
    the current token, or before the first one. Like a generator, it runs once: iterating again
    continues where the last loop left off, and yields nothing once it is done."""

    def __init__(self, loop: DecodeLoop, finish, opened: bool):
        self._loop, self._finish = loop, finish
        self._tracker = ThinkingTracker(opened)
        self._chunks: Iterator[Chunk] | None = None
        self.generation: Generation | None = None

    def stop(self) -> None:
        self._loop.interrupt()

    def __iter__(self) -> Iterator[Chunk]:
        if self._chunks is None:
            self._chunks = self._run()
        return self._chunks

    def _run(self) -> Iterator[Chunk]:
        for event in self._loop:
            for text, thinking in self._tracker.feed(event.text):
                yield Chunk(text, thinking, event.token_id, event.tokens)
        self.generation = self._finish(self._loop)


class Model:
    """A loaded Qwen3.5-family checkpoint on one backend.

    Attributes: `backend` ("torch" | "mlx" | "llamacpp"), `device`, `dtype`, `path` (the local checkpoint
    folder), `spec` (ModelSpec), `kernels` (implementation of each part), `tokenizer`.
    """

    def __init__(self, engine: Backend, tokenizer: Tokenizer, path: Path, spec: ModelSpec,
                 context: int | None = None):
        self.engine = engine  # the backend: `model.engine.model` is the framework's own module
        self.tokenizer = tokenizer
        self.path = path
        self.spec = spec
        if context is not None and (isinstance(context, bool) or not isinstance(context, (int, np.integer))
                                    or context < 2):
            raise WorkbenchError(f"context={context!r} is invalid: give the most tokens a generation may "
                                 "hold, a whole number >= 2.")
        self._context = context
        # Caches of earlier generations that chat turns and tool rounds continue from (prompt_cache.py).
        self.prompt_cache = PromptCache()
        self._speculative: int | None = None  # None: the default (see `speculative`)
        self._mtp_unusable: str | None = None  # why the default cannot draft (a broken MTP layer)

    # ---- what it is ---------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self.engine.name

    @property
    def device(self) -> str:
        return self.engine.device

    @property
    def dtype(self) -> str:
        return self.engine.dtype

    @property
    def kernels(self) -> dict[str, str]:
        return dict(self.engine.kernels)

    @property
    def fast_decode(self) -> bool:
        """Whether decode steps take the backend's fast path (torch: a static cache, replayed as
        a CUDA graph on CUDA). On by default on CUDA; off on a CPU, where an eager static step is
        no faster (set True to use it anyway). Tracing and interventions always run the reference
        path (`Stats.decode_path` says which ran)."""
        return self.engine.fast_decode

    @fast_decode.setter
    def fast_decode(self, on: bool) -> None:
        if on and not self.engine.fast_decode_available:
            raise WorkbenchError(f"the {self.backend} backend has no fast decode path for "
                                 f"{self.spec.architecture}; it decodes with {self.kernels['decode']!r}.")
        self.engine.fast_decode = bool(on)

    @property
    def speculative(self) -> int:
        """Draft tokens per step when `generate`/`stream`/`chat` get no `speculative=` (0: plain
        decoding). By default 2 where the checkpoint has an MTP layer and the backend's verify is
        cheap next to a plain step (`engine.speculation_pays`): torch without CUDA graphs (on this
        project's CPU `tiny` decoded 1.6-1.7x faster), MLX on Metal. 0 on MLX on a CPU (1.01x at
        best), 0 against torch's CUDA graphs (`fast_decode`; not yet measured side by side), 0
        without an MTP layer. The default also backs off: once its drafts stop paying in a
        generation (an untrained layer, text the layer cannot guess), the rest is plain steps
        (`generation.BACKOFF_WINDOW`; `stats.backed_off_at`). Set 1..4 (or 0) to fix it for this
        model, with no back-off; None returns to the default."""
        if self._speculative is not None:
            return self._speculative
        usable = self.has_mtp and self.engine.speculation_pays and self._mtp_unusable is None
        return DEFAULT_DRAFTS if usable else 0

    @speculative.setter
    def speculative(self, k: int | None) -> None:
        self._speculative = None if k is None else self._checked_speculative(k)

    @property
    def context_length(self) -> int:
        """The most tokens a generation may hold: the model's own limit, or `load(context=...)`."""
        limit = self.spec.max_position_embeddings
        return min(limit, int(self._context)) if self._context else limit

    def __repr__(self) -> str:
        return (f"Model({self.path.name!r}, backend={self.backend!r}, device={self.device!r}, "
                f"dtype={self.dtype!r}; {self.spec.summary()})")

    # ---- tokens -------------------------------------------------------------------------
    def encode(self, text: str) -> np.ndarray:
        """Text -> ids `[T]` int64 (no template applied)."""
        return self.tokenizer.encode(text)

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict], *, enable_thinking: bool = True,
                            tools: list[dict] | None = None, add_generation_prompt: bool = True) -> str:
        """The prompt text the checkpoint's own chat template makes of `messages`."""
        return self.tokenizer.apply_chat_template(messages, tools=tools, enable_thinking=enable_thinking,
                                                  add_generation_prompt=add_generation_prompt)

    def logits(self, token_ids: Sequence[int] | np.ndarray | str,
               intervene: Intervention | None = None) -> np.ndarray:
        """Full forward without a cache: ids `[T]` (or text) -> logits `[T, vocab]` float32.
        `intervene` changes the routing (disabled / forced experts) for this forward."""
        ids = self.prompt_ids(token_ids, thinking=True)[0]
        self._check_context(len(ids), 0)
        plan = plan_probes(self.spec, None, intervene, len(ids))
        with self.engine.lock:
            if not plan.active:
                return self.engine.logits(ids)
            with self.engine.probe(plan).installed():
                return self.engine.logits(ids)

    # ---- generation ---------------------------------------------------------------------
    def generate(self, prompt, max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 top_k: int = 0, min_p: float = 0.0, presence_penalty: float = 0.0,
                 seed: int | None = None, stop: str | Sequence[str] | None = None,
                 thinking: bool = True, tools: list[dict] | None = None,
                 ignore_eos: bool = False, trace: Trace | None = None,
                 intervene: Intervention | None = None, raw_control_tokens: bool = False,
                 prompt_cache: bool = False, speculative: int | None = None) -> Generation:
        """Generate from a string, a list of chat messages, or token ids.

        Chat messages go through the checkpoint's chat template with thinking on or off; the
        reasoning comes back in `.thinking`, the answer in `.text`. `temperature=0` is greedy.
        `ignore_eos=True` keeps going past end-of-sequence tokens (benchmarks, parity checks).
        `trace=Trace(routing=True, deltanet=True)` records what happens inside (`.routing`,
        `.deltanet`, `.attention` of the result); `intervene=Intervention(...)` changes routing.
        Control tokens written inside user and tool messages ("<|im_end|>", "<|im_start|>system")
        stay text, so no message can forge a turn; `raw_control_tokens=True` encodes them as
        control tokens, as transformers does. `prompt_cache=True` continues from the cache of an
        earlier generation whose tokens begin this prompt and keeps this one's (`model.prompt_cache`;
        on by default in `chat`): the output is the same, the prefill shorter.
        `speculative=k` (1..4) drafts k tokens per step with the checkpoint's multi-token-prediction
        layer and verifies them in one forward (`model.has_mtp`; torch and MLX; 0: off; by default
        `model.speculative`, which backs off to plain steps when its drafts stop paying):
        greedy output is the same token for token, sampled output has the same distribution, and
        traces hold the accepted tokens only; `.stats` counts the drafts proposed and accepted.
        """
        stream = self.stream(prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                             top_p=top_p, top_k=top_k, min_p=min_p, presence_penalty=presence_penalty,
                             seed=seed, stop=stop, thinking=thinking, tools=tools, ignore_eos=ignore_eos,
                             trace=trace, intervene=intervene, raw_control_tokens=raw_control_tokens,
                             prompt_cache=prompt_cache, speculative=speculative)
        for _ in stream:
            pass
        return stream.generation

    def stream(self, prompt, max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
               top_k: int = 0, min_p: float = 0.0, presence_penalty: float = 0.0,
               seed: int | None = None, stop: str | Sequence[str] | None = None,
               thinking: bool = True, tools: list[dict] | None = None,
               ignore_eos: bool = False, trace: Trace | None = None,
               intervene: Intervention | None = None, raw_control_tokens: bool = False,
               prompt_cache: bool = False, speculative: int | None = None) -> Stream:
        """Like `generate`, but returns a `Stream` that yields text `Chunk`s as they are made
        (never a broken UTF-8 character); `stream.generation` holds the result afterwards."""
        sampling = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                                  presence_penalty=presence_penalty, seed=seed)
        stops = checked_limits(max_new_tokens, stop)
        ids, prompt_text = self.prompt_ids(prompt, thinking=thinking, tools=tools,
                                           raw_control_tokens=raw_control_tokens)
        room = self._check_context(len(ids), max_new_tokens)
        budget = min(max_new_tokens, room)
        # Checked before anything runs: a bad or oversized request costs nothing.
        plan = plan_probes(self.spec, trace, intervene, len(ids) + budget)
        drafts = self._checked_speculative(speculative)
        backoff = speculative is None and self._speculative is None  # the default, not a choice
        if backoff and drafts:
            drafts = self._default_layer_loads(drafts)
        probe = self.engine.probe(plan) if plan.active else None
        opened = prompt_opens_thinking(prompt_text) if prompt_text is not None else False
        loop = DecodeLoop(self.engine, self.tokenizer, ids, budget, sampling,
                          stop=stops, eos_ids=() if ignore_eos else self.tokenizer.eos_token_ids,
                          probe=probe, store=self.prompt_cache if prompt_cache else None,
                          turn_marker=self.tokenizer.token_to_id("<|im_start|>"), speculative=drafts,
                          backoff=backoff)

        def finish(done: DecodeLoop) -> Generation:
            thought, answer = split_thinking(done.text, opened)
            new = np.asarray(done.token_ids, dtype=np.int64)
            records = {}
            if probe is not None:
                raw = probe.collect()
                n_rows = raw.n_rows or len(ids)
                forwarded = np.concatenate([ids, new])[:n_rows]
                texts = [self.tokenizer.decode([int(t)]) for t in forwarded]
                records = build_records(raw, plan, self.spec, forwarded, texts, len(ids))
            return Generation(text=answer, thinking=thought, raw_text=done.text, token_ids=new,
                              prompt_ids=ids, finish_reason=done.finish_reason, stats=done.stats,
                              **records)

        return Stream(loop, finish, opened)

    def chat(self, messages: list[dict], tools: Sequence = (), max_rounds: int = 5, thinking: bool = False,
             max_new_tokens: int = 512, on_event=None, raw_control_tokens: bool = False, **sampling):
        """Chat with native tool calling: `tools` are plain Python functions (schemas from their
        type hints and docstrings). The model's Qwen3-Coder XML calls are parsed, typed, run (only
        registered functions) and answered with tool responses until it gives a final answer or
        `max_rounds` tool rounds have run. Malformed calls, unknown functions, wrong argument
        types and exceptions come back to the model as tool errors. Returns a `ChatResult`
        (`.text`, `.messages`, `.calls`); `on_event` sees each chunk, call and result live.
        Control tokens inside user messages and tool results stay text (`raw_control_tokens`).
        Each round continues from the prompt cache (`prompt_cache=False` reads everything again)."""
        from .chat import ChatLoop
        return ChatLoop(self, messages, tools, max_rounds=max_rounds, thinking=thinking,
                        max_new_tokens=max_new_tokens, raw_control_tokens=raw_control_tokens,
                        **sampling).run(on_event)

    # ---- helpers ------------------------------------------------------------------------
    @property
    def has_mtp(self) -> bool:
        """Whether this model has a multi-token-prediction layer `speculative=` can draft with (its
        weights are read on first use; `spec.mtp_num_hidden_layers` says what config.json declares,
        and the weights may still be absent, as in many quantized re-uploads)."""
        return self.engine.has_mtp

    def _default_layer_loads(self, drafts: int) -> int:
        """`drafts` if the MTP layer loads, else 0 from now on: a layer with a tensor missing fails
        only an asked-for `speculative=k`; the default decodes plainly and says why once."""
        try:
            self.engine.mtp
        except WorkbenchError as e:
            self._mtp_unusable = str(e)
            warnings.warn(f"{self.path.name}: decoding without speculation by default: {e}", RuntimeWarning,
                          stacklevel=4)
            return 0
        return drafts

    def _checked_speculative(self, speculative) -> int:
        """`speculative=` as the number of drafts per step (0: off; None: `self.speculative`), or a
        WorkbenchError saying why not."""
        if speculative is None:
            return self.speculative
        if speculative == 0 and not isinstance(speculative, bool):
            return 0
        if isinstance(speculative, bool) or not isinstance(speculative, (int, np.integer)) or not 1 <= speculative <= 4:
            raise WorkbenchError(f"speculative={speculative!r} is invalid: give the number of draft tokens per "
                                 "step, 1 to 4 (0: off; None: the model's default, model.speculative).")
        if not self.has_mtp:
            if not self.spec.mtp_num_hidden_layers:
                why = (f"{self.path.name} has no multi-token-prediction layer (config.json: "
                       "mtp_num_hidden_layers is 0 or absent)")
            elif not self.engine.speculates:
                why = f"the {self.backend} backend cannot decode speculatively yet (load with backend='torch' or 'mlx')"
            else:
                why = (f"{self.path.name} declares a multi-token-prediction layer but its weight files hold no "
                       "mtp.* tensors (quantized re-uploads often strip them)")
            raise WorkbenchError(f"speculative={speculative} needs a draft layer: {why}. Generate without "
                                 "speculative=.")
        return int(speculative)

    def prompt_ids(self, prompt: Any, thinking: bool = True, tools: list[dict] | None = None,
                   raw_control_tokens: bool = False) -> tuple[np.ndarray, str | None]:
        """What `generate` feeds the model: a string, chat messages (through the chat template) or
        token ids -> (ids [T] int64, the prompt text, or None when ids were given)."""
        if isinstance(prompt, str):
            if tools:
                raise WorkbenchError("tools need a chat: pass a list of messages, not a string.")
            text = prompt
        elif isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
            ids, text = self.tokenizer.encode_chat(
                prompt, escape_roles=() if raw_control_tokens else ("user", "tool"), tools=tools,
                enable_thinking=thinking, add_generation_prompt=True)
            if len(ids) == 0:
                raise WorkbenchError("the prompt is empty: give at least one token of text.")
            return ids, text
        elif isinstance(prompt, (list, tuple, np.ndarray)) and len(prompt) and not \
                (isinstance(prompt, list) and isinstance(prompt[0], dict)):
            return self._checked_ids(prompt), None
        else:
            raise WorkbenchError(
                f"prompt of type {type(prompt).__name__} is not understood: pass a string, a list of "
                "chat messages ({'role': 'user', 'content': ...}), or a list of token ids.")
        ids = self.tokenizer.encode(text)
        if len(ids) == 0:
            raise WorkbenchError("the prompt is empty: give at least one token of text.")
        return ids, text

    def _checked_ids(self, prompt) -> np.ndarray:
        """Token ids as given by the user -> `[T]` int64, or a WorkbenchError saying what is wrong."""
        vocab = self.spec.vocab_size
        if isinstance(prompt, np.ndarray):
            if prompt.ndim != 1:
                raise WorkbenchError(f"token ids must be one sequence [T]; got an array of shape {prompt.shape} "
                                     "(for a batch, generate each row on its own).")
            if prompt.dtype == bool or not np.issubdtype(prompt.dtype, np.integer):
                raise WorkbenchError(f"token ids must be integers; got an array of {prompt.dtype}.")
            values = prompt.tolist()
        else:
            values = list(prompt)
        bad = next((t for t in values if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer))),
                   None)
        if bad is not None:
            raise WorkbenchError(f"token ids must be whole numbers in one flat list; got {bad!r} "
                                 f"({type(bad).__name__}). Pass a string, chat messages, or a list of ints.")
        low, high = min(values), max(values)
        if low < 0 or high >= vocab:
            raise WorkbenchError(f"token ids must be in [0, {vocab}); got {low}..{high}.")
        return np.asarray(values, dtype=np.int64)

    def _check_context(self, prompt_len: int, max_new_tokens: int) -> int:
        """Raise when the prompt does not fit; return how many new tokens still fit."""
        ctx = self.context_length
        if prompt_len >= ctx:
            raise WorkbenchError(
                f"the prompt has {prompt_len} tokens but the context of this model is {ctx}: "
                "shorten the prompt (or drop old chat turns) so at least one new token fits.")
        return ctx - prompt_len
