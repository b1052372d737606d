"""The chat template: how a list of messages becomes one prompt for a model trained on plain text.

lmlab's models have no chat template of their own, so every message is written as a line
``role: content`` and the prompt ends with ``assistant:``, for the model to continue::

    system: You are terse.
    user: Hello
    assistant:

The reply ends at the end token, at ``max_tokens``, at a stop string of the request, or where
the model starts the next turn (``\\nuser:``, a stop string added to every chat request).
"""

from __future__ import annotations

TURN_STOP = "\nuser:"


def chat_prompt(messages: list[tuple[str, str]]) -> str:
    return "".join(f"{role}: {content}\n" for role, content in messages) + "assistant:"
