"""Chat-specific text handling: the thinking block and how a prompt starts the answer."""
from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def prompt_opens_thinking(prompt_text: str) -> bool:
    """True when the prompt ends inside an open <think> block (the model writes its reasoning
    first), as the Qwen3.5 template does with thinking on."""
    last_open = prompt_text.rfind(THINK_OPEN)
    return last_open != -1 and prompt_text.rfind(THINK_CLOSE) < last_open


def split_thinking(output: str, opened: bool) -> tuple[str | None, str]:
    """(thinking, answer) of a model output. `opened`: the prompt already opened <think>.

    Without a closing tag the whole output is thinking (a generation cut short while reasoning).
    """
    if not opened:
        if THINK_CLOSE not in output:
            return None, output
        output = output.split(THINK_OPEN, 1)[-1]
    if THINK_CLOSE not in output:
        return output.strip(), ""
    thinking, answer = output.split(THINK_CLOSE, 1)
    return thinking.strip(), answer.lstrip("\n")


class ThinkingTracker:
    """Labels streamed text as thinking or answer as it arrives."""

    def __init__(self, opened: bool):
        self.in_thinking = opened

    def feed(self, piece: str) -> list[tuple[str, bool]]:
        """Split one piece into [(text, is_thinking)], dropping the think tags themselves."""
        out: list[tuple[str, bool]] = []
        while piece:
            tag = THINK_CLOSE if self.in_thinking else THINK_OPEN
            at = piece.find(tag)
            if at == -1:
                out.append((piece, self.in_thinking))
                break
            if at:
                out.append((piece[:at], self.in_thinking))
            self.in_thinking = not self.in_thinking
            piece = piece[at + len(tag):]
        return [(t, th) for t, th in out if t]
