"""The OpenAI request bodies, checked field by field, and the error shape every client understands.

A body is read as plain JSON and checked here rather than by a schema library, so each error
names its field (``param``) and says what was wrong, as OpenAI's do. Fields of OpenAI's API that
lmlab does not implement are accepted only at their neutral value (``presence_penalty: 0``,
``best_of`` equal to ``n``...); any other field is an error, so a typo never passes silently.
``top_k`` and ``ignore_eos`` are the extensions vLLM and llama.cpp's server accept too.
"""

from __future__ import annotations

import math
import numbers

from lmlab.core.errors import ConfigError
from lmlab.generate.samplers import SamplerConfig

SAMPLING_FIELDS = {"model", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "n", "stream",
                   "stream_options", "user", "ignore_eos", "presence_penalty", "frequency_penalty", "logit_bias"}
COMPLETION_FIELDS = SAMPLING_FIELDS | {"prompt", "logprobs", "echo", "best_of", "suffix"}
CHAT_FIELDS = SAMPLING_FIELDS | {"messages", "logprobs", "top_logprobs", "max_completion_tokens"}
MAX_LOGPROBS = 20  # OpenAI's bound on alternatives per token
MAX_N = 16
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions


class ApiError(Exception):
    """An error to answer with ``{"error": {"message", "type", "param", "code"}}`` and ``status``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def bad(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param, code)


def check_fields(body, allowed: set[str], required: tuple[str, ...]) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", None, "invalid_json")
    for name in sorted(body):
        if name not in allowed:
            raise bad(name, f"unknown field {name!r}", "unknown_field")
    for name in required:
        if name not in body:
            raise bad(name, f"{name!r} is required", "missing_field")
    return body


def _integer(body, name, default, low, high=None):
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low or (
            high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise bad(name, f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def _number(body, name, default):
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise bad(name, f"{name} must be a finite number, got {value!r}")
    return float(value)


def _boolean(body, name):
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad(name, f"{name} must be true or false, got {value!r}")
    return value


def sampling(body: dict) -> dict:
    """The settings every generating endpoint shares, checked; ``max_tokens`` may be None (not given)."""
    for name in ("presence_penalty", "frequency_penalty"):
        if _number(body, name, 0.0) != 0:
            raise bad(name, f"{name} is not supported (only 0)")
    if body.get("logit_bias"):
        raise bad("logit_bias", "logit_bias is not supported")
    top_k = max(0, _integer(body, "top_k", 0, -1))  # -1 is vLLM's "off", as 0 is here
    try:
        sampler = SamplerConfig(_number(body, "temperature", 1.0), top_k, _number(body, "top_p", 1.0))
    except ConfigError as error:  # its message starts with the field's name
        raise bad(str(error).split()[0], str(error)) from None
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else stop or []
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise bad("stop", "stop must be a string or a list of at most 4 strings")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise bad("stream_options", "stream_options may hold only include_usage")
    if options and not _boolean(body, "stream"):
        raise bad("stream_options", "stream_options needs stream: true")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise bad("user", "user must be a string")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
        raise bad("seed", f"seed must be an integer, got {seed!r}")
    return {"sampler": sampler, "max_tokens": _integer(body, "max_tokens", None, 0),
            "n": _integer(body, "n", 1, 1, MAX_N),
            "seed": None if seed is None else int(seed), "stop": stop, "stream": _boolean(body, "stream"),
            "include_usage": _boolean(options, "include_usage"), "ignore_eos": _boolean(body, "ignore_eos")}


def completion_request(body) -> dict:
    check_fields(body, COMPLETION_FIELDS, ("prompt",))
    settings = sampling(body)
    if body.get("suffix") is not None:
        raise bad("suffix", "suffix is not supported")
    best_of = body.get("best_of")
    if best_of is not None and best_of != settings["n"]:
        raise bad("best_of", "best_of is not supported (only equal to n)")
    settings["logprobs"] = _integer(body, "logprobs", None, 0, MAX_LOGPROBS)
    settings["echo"] = _boolean(body, "echo")
    settings["prompts"] = prompts_of(body["prompt"])
    return settings


def prompts_of(prompt) -> list:
    """A prompt as a list of prompts, each a string or a list of token ids."""
    def ids(value):
        return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)

    if isinstance(prompt, str) or (ids(prompt) and prompt):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) or (ids(p) and p) for p in prompt):
        return list(prompt)
    raise bad("prompt", "prompt must be a string, a list of strings, a list of token ids or a list of such lists")


def chat_request(body) -> dict:
    check_fields(body, CHAT_FIELDS, ("messages",))
    settings = sampling(body)
    if body.get("max_completion_tokens") is not None:
        settings["max_tokens"] = _integer(body, "max_completion_tokens", None, 0)
    wants = _boolean(body, "logprobs")
    top = _integer(body, "top_logprobs", 0, 0, MAX_LOGPROBS)
    if top and not wants:
        raise bad("top_logprobs", "top_logprobs needs logprobs: true")
    settings["logprobs"] = top if wants else None
    settings["echo"] = False
    settings["messages"] = messages_of(body["messages"])
    return settings


ROLES = ("system", "user", "assistant")


def messages_of(messages) -> list[tuple[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise bad("messages", "messages must be a non-empty list")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise bad(f"messages[{i}]", f"each message needs a role, one of {', '.join(ROLES)}")
        content = message.get("content")
        if isinstance(content, list):  # content parts: only text ones
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise bad(f"messages[{i}].content", "only text content parts are supported")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise bad(f"messages[{i}].content", "content must be a string")
        out.append((message["role"], content))
    return out
