"""The checkpoint's own tokenizer and chat template, framework-free.

Reads `tokenizer.json` with the `tokenizers` library and renders the chat template the way
transformers and mlx-lm do (sandboxed Jinja, `trim_blocks`, `lstrip_blocks`, `tojson` without ASCII
escaping), so a prompt is the same token ids whichever backend runs it.
"""
from __future__ import annotations

import json
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


class Tokenizer:
    """Encode, decode and render chats for one checkpoint folder."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer as _HFTokenizer

        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.exists():
            raise WorkbenchError(
                f"{folder} has no tokenizer.json: the workbench needs the fast tokenizer file that "
                "Qwen releases ship. Copy it from the model's Hub repository into this folder.")
        self._tok = _HFTokenizer.from_file(str(path))
        config_path = folder / "tokenizer_config.json"
        self.config: dict = json.loads(config_path.read_text()) if config_path.exists() else {}
        template_path = folder / "chat_template.jinja"
        self.chat_template: str | None = (
            template_path.read_text() if template_path.exists() else self.config.get("chat_template"))
        self.eos_token_ids: tuple[int, ...] = self._eos_ids(folder)

    def _eos_ids(self, folder: Path) -> tuple[int, ...]:
        """Ids that end a generation: generation_config.json, then the config, then <|im_end|>."""
        ids: list[int] = []
        for name in ("generation_config.json", "config.json"):
            path = folder / name
            if path.exists():
                cfg = json.loads(path.read_text())
                for source in (cfg, cfg.get("text_config", {})):
                    value = source.get("eos_token_id")
                    if value is not None:
                        ids += value if isinstance(value, list) else [value]
        for token in ("<|im_end|>", "<|endoftext|>"):
            token_id = self._tok.token_to_id(token)
            if token_id is not None:
                ids.append(token_id)
        return tuple(dict.fromkeys(ids))

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def encode(self, text: str) -> np.ndarray:
        """Text -> token ids `[T]` int64 (no special tokens added: Qwen adds none)."""
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

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
        return env.from_string(self.chat_template)

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
