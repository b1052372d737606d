"""Token ids of prompts and completions, fitted to the model's context.

Training sequences are ``prompt + completion + end``; the model reads all but
the last token, so ``len(prompt) + len(completion) <= block_size``. Decoding
feeds the prompt and then every new token but the last, so a prompt has
``block_size - max_new_tokens + 1`` tokens of room.

A prompt that does not fit is an error naming the example, unless
``truncate`` is set: then the template's ``truncate_field`` (the source text,
or a QA context) is cut at the end, to the longest prefix that fits, and the
caller counts and reports how many were cut.
"""

from __future__ import annotations

from typing import Mapping

from lmlab.core.errors import DataError
from lmlab.tasks.readers.examples import TaskExample
from lmlab.tasks.readers.templates import Template


def completion_ids(tokenizer, prefix: str, target: str) -> list[int]:
    """The completion's tokens, without the end token; an empty target is an empty completion."""
    return tokenizer.encode(prefix + target) if target else []


def fit_prompt(tokenizer, template: Template, example: TaskExample, room: int, truncate: bool,
               block_size: int) -> tuple[list[int], str, bool]:
    """``(prompt ids, completion prefix, truncated?)`` with at most ``room`` prompt tokens."""
    prompt, prefix = template.render(example.fields, example.where)
    ids = tokenizer.encode(prompt)
    if 0 < len(ids) <= room:
        return ids, prefix, False
    if not ids:
        raise DataError(f"{example.where}: the prompt is empty")
    if not truncate:
        raise DataError(f"{example.where}: the prompt is {len(ids)} tokens but the model's context of "
                        f"{block_size} leaves room for {max(room, 0)} (the rest is for the answer); pass "
                        f"--truncate-source to cut the {template.truncate_field} to fit")
    field = template.truncate_field
    text = example.fields.get(field, "")
    lo, hi = 0, len(text)  # the longest prefix of the field that fits lies in [lo, hi]

    def fits(n: int) -> list[int] | None:
        candidate = tokenizer.encode(template.render(_with(example.fields, field, text[:n]))[0])
        return candidate if 0 < len(candidate) <= room else None

    if fits(0) is None:
        raise DataError(f"{example.where}: even with an empty {field} the prompt does not fit the context of "
                        f"{block_size} with room for the answer")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid) is not None:
            lo = mid
        else:
            hi = mid - 1
    return fits(lo), prefix, True


def _with(fields: Mapping[str, str], name: str, value: str) -> dict[str, str]:
    return {**fields, name: value}


def training_sequence(tokenizer, template: Template, example: TaskExample, block_size: int,
                      truncate: bool) -> tuple[list[int], int, bool]:
    """``(prompt + completion + end, prompt length, truncated?)`` for one training example."""
    _, prefix = template.render(example.fields, example.where)
    completion = completion_ids(tokenizer, prefix, example.target)
    room = block_size - len(completion)
    if room < 1:
        raise DataError(f"{example.where}: the target alone is {len(completion)} tokens, more than the model's "
                        f"context of {block_size} allows")
    prompt, _, truncated = fit_prompt(tokenizer, template, example, room, truncate, block_size)
    return prompt + completion + [tokenizer.eos_id], len(prompt), truncated
