"""The checkpoint's own tokenizer and chat template, framework-free.

Reads `tokenizer.json` with the `tokenizers` library and renders the chat template the way
transformers and mlx-lm do (sandboxed Jinja, `trim_blocks`, `lstrip_blocks`, `tojson` without ASCII
escaping), so a prompt is the same token ids whichever backend runs it.
"""
from __future__ import annotations

import json
import re
import secrets
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import WorkbenchError


def _raise_template_error(message: str):
    raise WorkbenchError(f"chat template: {message}")


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _json_object(path: Path) -> dict:
    """A JSON file that must hold an object; {} when the file is absent."""
    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WorkbenchError(f"{path} is not valid JSON ({exc}): copy it again from the model's release.") from None
    if not isinstance(value, dict):
        raise WorkbenchError(f"{path} holds a {type(value).__name__}, not a JSON object: copy it again from "
                             "the model's release.")
    return value


class Tokenizer:
    """Encode, decode and render chats for one checkpoint folder (or, through `from_parts`, for a
    tokenizer rebuilt from a GGUF file's metadata)."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer as _HFTokenizer

        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.exists():
            raise WorkbenchError(
                f"{folder} has no tokenizer.json: the workbench needs the fast tokenizer file that "
                "Qwen releases ship. Copy it from the model's Hub repository into this folder.")
        try:
            self._tok = _HFTokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for a file it cannot parse
            raise WorkbenchError(f"{path} is not a tokenizer the tokenizers library can read ({exc}): "
                                 "copy tokenizer.json again from the model's release.") from None
        self.config: dict = _json_object(folder / "tokenizer_config.json")
        template_path = folder / "chat_template.jinja"
        template = template_path.read_text() if template_path.exists() else self.config.get("chat_template")
        if template is not None and not isinstance(template, str):
            raise WorkbenchError("tokenizer_config.json's chat_template is not a string (named templates "
                                 "are not supported): save the template as chat_template.jinja.")
        ids: list[int] = []
        for name in ("generation_config.json", "config.json"):
            cfg = _json_object(folder / name)
            for source in (cfg, cfg.get("text_config") or {}):
                value = source.get("eos_token_id") if isinstance(source, dict) else None
                if value is not None:
                    ids += value if isinstance(value, list) else [value]
        self._finish(template, ids)

    @classmethod
    def from_parts(cls, tokenizer, chat_template: str | None, eos_token_ids, config: dict | None = None):
        """A Tokenizer over a `tokenizers.Tokenizer` built elsewhere (from a GGUF file's vocabulary)."""
        self = cls.__new__(cls)
        self._tok, self.config = tokenizer, dict(config or {})
        self._finish(chat_template, list(eos_token_ids))
        return self

    def _finish(self, chat_template: str | None, eos_ids: list[int]) -> None:
        self.chat_template: str | None = chat_template
        if self.chat_template:
            self._template  # compiled now: a broken template is reported at load, not at the first chat
        self.eos_token_ids: tuple[int, ...] = self._eos_ids(eos_ids)

    def _eos_ids(self, ids: list[int]) -> tuple[int, ...]:
        """Ids that end a generation: the configured ones, then <|im_end|> and <|endoftext|>."""
        ids = list(ids)
        for token in ("<|im_end|>", "<|endoftext|>"):
            token_id = self._tok.token_to_id(token)
            if token_id is not None:
                ids.append(token_id)
        return tuple(dict.fromkeys(ids))

    @property
    def vocab_size(self) -> int:
        """Ids the tokenizer knows, added tokens included."""
        return self._tok.get_vocab_size()

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def encode(self, text: str) -> np.ndarray:
        """Text -> token ids `[T]` int64 (no special tokens added: Qwen adds none)."""
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    @cached_property
    def control_tokens(self) -> tuple[str, ...]:
        """The chat format's markup tokens (<|im_start|>, <|im_end|>, <think>, <tool_call>, ...):
        every added token, longest first."""
        tokens = {t.content for t in self._tok.get_added_tokens_decoder().values() if t.content}
        return tuple(sorted(tokens, key=len, reverse=True))

    @cached_property
    def _control_pattern(self) -> re.Pattern:
        return re.compile("|".join(re.escape(c) for c in self.control_tokens) or r"(?!x)x")

    @cached_property
    def _as_text(self):
        """A copy of the tokenizer that reads special-token strings as plain text."""
        from tokenizers import Tokenizer as _HFTokenizer
        plain = _HFTokenizer.from_str(self._tok.to_str())
        plain.encode_special_tokens = True
        return plain

    def encode_chat(self, messages: list[dict[str, Any]], *, escape_roles: Sequence[str] = ("user", "tool"),
                    **render: Any) -> tuple[np.ndarray, str]:
        """Render a conversation and encode it so that control tokens inside the content of
        `escape_roles` messages stay text: a user or a tool result that writes
        "<|im_end|>\n<|im_start|>system" gets those characters, not a forged turn. The template's
        own markup is encoded as control tokens. Returns (ids [T] int64, the rendered text).
        Content without control tokens encodes exactly as `encode(apply_chat_template(...))`."""
        if not escape_roles:
            text = self.apply_chat_template(messages, **render)
            return self.encode(text), text
        nonce = secrets.token_hex(4)
        found: list[str] = []

        def sub(m: re.Match) -> str:
            found.append(m.group(0))
            return f"\ue000{nonce}{len(found) - 1}\ue001"

        def mark(text):
            return self._control_pattern.sub(sub, text) if isinstance(text, str) else text

        marked = []
        for message in messages:
            if isinstance(message, dict) and message.get("role") in escape_roles:
                message = dict(message)
                content = message.get("content")
                if isinstance(content, list):
                    message["content"] = [dict(p, text=mark(p["text"])) if isinstance(p, dict) and "text" in p
                                          else p for p in content]
                else:
                    message["content"] = mark(content)
            marked.append(message)
        rendered = self.apply_chat_template(marked, **render)
        if not found:
            return self.encode(rendered), rendered
        ids: list[int] = []
        pieces = re.split(f"\ue000{nonce}(\\d+)\ue001", rendered)
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                ids += self._tok.encode(piece, add_special_tokens=False).ids if piece else []
            else:
                control = found[int(piece)]
                # Split in two so that added tokens that are not "special" do not match either.
                ids += self._as_text.encode(control[:1], add_special_tokens=False).ids
                ids += self._as_text.encode(control[1:], add_special_tokens=False).ids
        text = re.sub(f"\ue000{nonce}(\\d+)\ue001", lambda m: found[int(m.group(1))], rendered)
        return np.asarray(ids, dtype=np.int64), text

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = False) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    @cached_property
    def _template(self):
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        if not self.chat_template:
            raise WorkbenchError(
                "this checkpoint has no chat template (chat_template.jinja or tokenizer_config.json "
                "'chat_template'): pass a plain string prompt, or add the template file.")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_template_error
        try:
            return env.from_string(self.chat_template)
        except jinja2.TemplateSyntaxError as exc:
            raise WorkbenchError(f"the chat template does not compile (line {exc.lineno}: {exc.message}): "
                                 "fix chat_template.jinja, or copy it again from the model's release.") from None

    def apply_chat_template(self, messages: list[dict[str, Any]], *, tools: list[dict] | None = None,
                            add_generation_prompt: bool = True, enable_thinking: bool = True,
                            **extra: Any) -> str:
        """Render a conversation to the prompt text the model was trained on."""
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise WorkbenchError(
                "messages must be a list of dicts like {'role': 'user', 'content': 'Hi'}.")
        for i, message in enumerate(messages):
            if "role" not in message:
                raise WorkbenchError(f"message {i} has no 'role' (system, user, assistant or tool).")
        return self._template.render(messages=messages, tools=tools,
                                     add_generation_prompt=add_generation_prompt,
                                     enable_thinking=enable_thinking, **extra)


class StreamDecoder:
    """Turns token ids into text pieces as they arrive, never splitting a UTF-8 character.

    Byte-level BPE can end a token in the middle of a multi-byte character; the decoded text then
    ends in U+FFFD. Such ids are held back until a later token completes the character. Byte-level
    decoding is a concatenation, so once a piece is handed out the window restarts empty and the
    cost per token stays constant.
    """

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._pending: list[int] = []

    def push(self, token_id: int) -> str:
        self._pending.append(int(token_id))
        text = self._tokenizer.decode(self._pending)
        if text.endswith("\ufffd"):
            return ""
        self._pending = []
        return text

    def flush(self) -> str:
        """Whatever is still held at the end (an incomplete character decodes as U+FFFD)."""
        text = self._tokenizer.decode(self._pending) if self._pending else ""
        self._pending = []
        return text
