"""User-supplied text made safe to log, and instructions checked before they reach a model. No ROS.

Instructions, frame ids and file names come from outside (a topic, a bag, a shell) and end up in log
lines on an operator's terminal: ``printable`` escapes every control or format character (ESC, BEL,
CR, bidi overrides, ...) so that nothing written to a terminal can move its cursor, ring or hide
text, and bounds the length. ``clean_instruction`` turns raw instruction text into what the policy is
given (terminal escape sequences removed, other control characters made spaces, whitespace
collapsed) and refuses text without a single word.
"""
from __future__ import annotations

import re
import unicodedata

# Terminal escape sequences (ECMA-48): CSI (ESC [ or 0x9b ... final byte), OSC (ESC ] ... BEL or ESC \),
# and the other ESC sequences (ESC, intermediate bytes, final byte: "\x1bc", "\x1b(B"). Removed whole
# from instructions: "\x1b[31mopen" is "open", not "[31mopen".
_ESCAPES = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
                      r"|\x1b[ -/]*[0-~]")


class InstructionError(ValueError):
    """An instruction the policy cannot act on (empty, no words, not text)."""


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _is_control(ch: str) -> bool:
    # Cc control, Cf format (bidi overrides, zero width), Cs surrogates, Co private use, Cn unassigned;
    # Zl / Zp line and paragraph separators.
    return unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp")


def printable(text: object, limit: int = 200) -> str:
    """``text`` for a log line: control/format characters escaped (``\\x1b``), at most ``limit``
    characters of the original (then ``...`` and the count left out)."""
    s = text if isinstance(text, str) else str(text)
    cut = s[:limit]
    out = "".join(_escape(ch) if _is_control(ch) else ch for ch in cut)
    if len(s) > limit:
        out += f"... ({len(s) - limit} more characters)"
    return out


def clean_instruction(text: object, max_chars: int = 1000) -> str:
    """The instruction as the policy gets it: terminal escape sequences removed, other control and
    format characters become spaces, runs of
    whitespace one space, ends stripped. Raises InstructionError when it is not a str, is longer than
    ``max_chars``, or has no letter or digit (empty, only spaces, punctuation or control bytes)."""
    if not isinstance(text, str):
        raise InstructionError(f"an instruction must be text, got {type(text).__name__}")
    if len(text) > max_chars:
        raise InstructionError(f"instruction has {len(text)} characters, more than {max_chars}: "
                               f"\"{printable(text, 60)}\"")
    cleaned = " ".join("".join(" " if _is_control(ch) else ch for ch in _ESCAPES.sub("", text)).split())
    if not any(ch.isalnum() for ch in cleaned):
        what = "empty" if not text.strip() else f"without a word (\"{printable(text, 60)}\")"
        raise InstructionError(f"instruction {what}: send what the robot should do, in words")
    return cleaned
