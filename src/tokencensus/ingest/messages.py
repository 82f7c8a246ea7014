"""Turn a request's messages into the prompt text a classifier sees.

The rule for every format: system prompt first, then the messages in the
order the client sent them, each message's text parts joined by newlines.
Non-text parts (images, audio, files) are skipped and counted. A message is
``{"role", "content"}`` (OpenAI/Anthropic style) or ``{"from", "value"}``
(ShareGPT style); system and developer messages count as system prompt.
"""

from __future__ import annotations

from typing import Any

TEXT_PART_TYPES = {"text", "input_text", "output_text"}


def content_text(content: Any) -> tuple[str, int]:
    """Text of one message ``content`` (string or list of parts) and how many parts were skipped."""
    if content is None:
        return "", 0
    if isinstance(content, str):
        return content, 0
    if isinstance(content, dict):
        content = [content]
    if isinstance(content, list):
        texts, skipped = [], 0
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and (
                part.get("type") in TEXT_PART_TYPES or ("text" in part and "type" not in part)
            ):
                t = part.get("text")
                if isinstance(t, str):
                    texts.append(t)
            else:
                skipped += 1
        return "\n".join(texts), skipped
    if isinstance(content, bool):
        return ("true" if content else "false"), 0
    return str(content), 0


def messages_to_prompt(messages: Any, system: str | None = None) -> tuple[str | None, int]:
    """Prompt text from a chat ``messages`` list (plus an optional separate system prompt).

    Returns (text or None when there is none, number of multimodal parts skipped).
    """
    if messages is None and not system:
        return None, 0
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, list):
        raise ValueError("messages is not a list")
    systems: list[str] = [system] if system else []
    rest: list[str] = []
    skipped = 0
    for m in messages:
        if not isinstance(m, dict):
            raise ValueError("a message is not an object")
        text, s = content_text(m["content"] if "content" in m else m.get("value"))
        skipped += s
        if not text:
            continue
        role = m.get("role") or m.get("from")
        (systems if role in ("system", "developer") else rest).append(text)
    parts = systems + rest
    return ("\n".join(parts) if parts else None), skipped
