"""The HTTP side: OpenAI's routes on FastAPI, talking to the engine thread through asyncio queues.

Every generating request becomes one :class:`~lmlab.serve.engine.Job` per prompt; the engine's
events come back on one asyncio queue per request and are written out whole (JSON) or as they
come (server-sent events, ending ``data: [DONE]``). When a streaming client goes away Starlette
cancels the response's generator, whose ``finally`` cancels the jobs, and the engine frees their
slots before its next step. Every error is OpenAI's shape, ``{"error": {...}}``, with its 4xx.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException

from lmlab.serve.chat import TURN_STOP, chat_prompt
from lmlab.serve.engine import Engine, Job, QueueFull
from lmlab.serve.protocol import DEFAULT_MAX_TOKENS, ApiError, chat_request, check_fields, completion_request

ROUTES = ("/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions", "/tokenize",
          "/detokenize")
SSE = "text/event-stream"
POLL_S = 0.5  # how often a request still waiting for its first event checks its client is there


def create_app(engine: Engine, model_name: str) -> FastAPI:
    app = FastAPI(title="lmlab serve", docs_url=None, redoc_url=None, openapi_url=None)
    tokenizer, metrics, created = engine.tokenizer, engine.metrics, int(time.time())

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        response = await call_next(request)
        path = request.url.path
        metrics.count_request(path if path in ROUTES else "other", response.status_code)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request, error: ApiError):
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(request, error: HTTPException):  # unknown route, wrong method
        return JSONResponse(ApiError(error.status_code, str(error.detail), None, None).body(),
                            status_code=error.status_code)

    async def read_json(request: Request):
        try:
            return json.loads(await request.body())
        except ValueError as error:  # also bytes that are not UTF-8
            raise ApiError(400, f"the body is not valid JSON: {error}", None, "invalid_json") from None

    def check_model(body) -> None:
        name = body.get("model")
        if name is not None and name != model_name:
            raise ApiError(404, f"the model {name!r} does not exist; this server has {model_name!r}", "model",
                           "model_not_found")

    def prompt_ids(prompt) -> list[int]:
        """What the model reads: the end token, then the prompt (a text starts after one, as in training)."""
        if isinstance(prompt, str):
            return [tokenizer.eos_id] + tokenizer.encode(prompt)
        bad = [t for t in prompt if not 0 <= t < tokenizer.vocab_size]
        if bad:
            raise ApiError(400, f"token id {bad[0]} is not in [0, {tokenizer.vocab_size})", "prompt")
        return list(prompt) if prompt[0] == tokenizer.eos_id else [tokenizer.eos_id, *prompt]

    def room(ids: list[int], max_tokens: int | None, default: int) -> int:
        if len(ids) > engine.context:
            raise ApiError(400, f"the prompt is {len(ids)} tokens with its start token; the context holds "
                                f"{engine.context}", "prompt", "context_length_exceeded")
        left = engine.context - len(ids) + 1  # the last new token is never fed back
        if max_tokens is None:
            return min(default, left)
        if max_tokens > left:
            raise ApiError(400, f"max_tokens {max_tokens} and a prompt of {len(ids)} tokens exceed the context of "
                                f"{engine.context} (at most {left} new tokens)", "max_tokens",
                           "context_length_exceeded")
        return max_tokens

    def submit(prompts: list[list[int]], settings: dict, max_tokens: list[int], stop: list[str]):
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        if settings["n"] > engine.batch.slots:
            raise ApiError(400, f"n is at most {engine.batch.slots} here (the server's --max-batch)", "n")
        jobs = [Job(ids, settings["sampler"], budget, n=settings["n"], seed=settings["seed"],
                    logprobs=settings["logprobs"], echo=settings["echo"], stop=stop,
                    ignore_eos=settings["ignore_eos"],
                    emit=lambda batch, j=j: loop.call_soon_threadsafe(queue.put_nowait, (j, batch)))
                for j, (ids, budget) in enumerate(zip(prompts, max_tokens))]
        try:
            engine.submit(jobs)
        except QueueFull as error:
            raise ApiError(429, f"the server is busy: {error}; retry later", None, "rate_limit_exceeded",
                           "rate_limit_error") from None
        return jobs, queue

    async def events(jobs, queue, request: Request):
        """``(job, events)``: each list the engine emitted at once, until every choice of every job has finished;
        an error event ends it.

        While nothing comes (a job still waiting for a slot) it looks every :data:`POLL_S` seconds whether
        the client went away: a stream notices that itself only when it next writes."""
        left = sum(job.n for job in jobs)
        while left:
            try:
                j, batch = await asyncio.wait_for(queue.get(), POLL_S)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    for job in jobs:
                        job.cancel()
                    return
                continue
            for event in batch:
                if event["type"] == "error":
                    raise ApiError(500, event["message"], None, "engine_error", "server_error")
            left -= sum(event["type"] == "finish" for event in batch)
            yield j, batch

    # ------------------------------------------------------------ the routes

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, **engine.served}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "lmlab", "max_model_len": engine.context}]}

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/")
    async def playground():
        return HTMLResponse(resources.files("lmlab.serve").joinpath("playground.html").read_text("utf-8"))

    @app.post("/tokenize")
    async def tokenize(request: Request):
        body = check_fields(await read_json(request), {"model", "prompt"}, ("prompt",))
        check_model(body)
        if not isinstance(body["prompt"], str):
            raise ApiError(400, "prompt must be a string", "prompt")
        ids = tokenizer.encode(body["prompt"])
        return {"tokens": ids, "token_strings": [tokenizer.id_to_token(t) for t in ids], "count": len(ids),
                "max_model_len": engine.context}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        body = check_fields(await read_json(request), {"model", "tokens"}, ("tokens",))
        check_model(body)
        ids = body["tokens"]
        if not isinstance(ids, list) or not all(isinstance(t, int) and 0 <= t < tokenizer.vocab_size for t in ids):
            raise ApiError(400, f"tokens must be a list of ids in [0, {tokenizer.vocab_size})", "tokens")
        return {"prompt": tokenizer.decode(ids)}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_json(request)
        settings = completion_request(body)
        check_model(body)
        prompts = [prompt_ids(p) for p in settings["prompts"]]
        budgets = [room(ids, settings["max_tokens"], DEFAULT_MAX_TOKENS) for ids in prompts]
        jobs, queue = submit(prompts, settings, budgets, settings["stop"])
        reply = Reply("cmpl", "text_completion", model_name, tokenizer, jobs, settings)
        if settings["stream"]:
            return StreamingResponse(reply.stream(events(jobs, queue, request), chat=False), media_type=SSE)
        await collect(reply, events(jobs, queue, request), jobs)
        return reply.completion()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_json(request)
        settings = chat_request(body)
        check_model(body)
        ids = prompt_ids(chat_prompt(settings["messages"]))
        budget = room(ids, settings["max_tokens"], engine.context)
        jobs, queue = submit([ids], settings, [budget], settings["stop"] + [TURN_STOP])
        reply = Reply("chatcmpl", "chat.completion", model_name, tokenizer, jobs, settings)
        if settings["stream"]:
            return StreamingResponse(reply.stream(events(jobs, queue, request), chat=True), media_type=SSE)
        await collect(reply, events(jobs, queue, request), jobs)
        return reply.chat()

    return app


async def collect(reply, stream, jobs) -> None:
    """A non-streaming reply: every event into ``reply``; the jobs end (their slots free) however this ends."""
    try:
        async for j, batch in stream:
            for event in batch:
                reply.take(j, event)
    finally:
        for job in jobs:
            job.cancel()


class Reply:
    """One request's answer, built from engine events: whole (:meth:`completion`, :meth:`chat`) or streamed."""

    def __init__(self, prefix, kind, model_name, tokenizer, jobs, settings):
        self.id, self.kind, self.model = f"{prefix}-{uuid.uuid4().hex}", kind, model_name
        self.created = int(time.time())
        self.tokenizer, self.jobs, self.settings, self.n = tokenizer, jobs, settings, settings["n"]
        count = len(jobs) * self.n
        self.texts, self.reasons = [""] * count, [None] * count
        self.tokens: list[list[tuple]] = [[] for _ in range(count)]  # (id, logprob, top) per generated token
        self.prompt_logprobs: dict[int, list[tuple]] = {}
        self.made = [0] * count

    def index(self, j: int, event: dict) -> int:
        return j * self.n + event["choice"]

    def take(self, j: int, event: dict) -> None:
        if event["type"] == "prompt":
            self.prompt_logprobs[j] = event["logprobs"]
            return
        i = self.index(j, event)
        self.texts[i] += event["text"]
        if event["type"] == "token":
            self.tokens[i].append((event["token"], event["logprob"], event["top"]))
            self.made[i] += 1
        else:
            self.reasons[i] = event["reason"]

    def usage(self) -> dict:
        prompt = sum(len(job.prompt) - 1 for job in self.jobs)  # the start token is not counted
        made = sum(self.made)
        return {"prompt_tokens": prompt, "completion_tokens": made, "total_tokens": prompt + made}

    # ---------------------------------------------------- log-probabilities in OpenAI's two shapes

    def echoed(self, j: int) -> str:
        return self.tokenizer.decode(self.jobs[j].prompt[1:]) if self.settings["echo"] else ""

    def completion_logprobs(self, entries: list[tuple], offset: int) -> dict:
        names = [self.tokenizer.id_to_token(t) for t, _, _ in entries]
        offsets = []
        for name in names:
            offsets.append(offset)
            offset += len(name)
        return {"tokens": names, "token_logprobs": [lp for _, lp, _ in entries],
                "top_logprobs": [{self.tokenizer.id_to_token(a): b for a, b in top} for _, _, top in entries],
                "text_offset": offsets}

    def chat_logprobs(self, entries: list[tuple]) -> dict:
        def entry(token, logprob):
            name = self.tokenizer.id_to_token(token)
            return {"token": name, "logprob": logprob, "bytes": list(name.encode("utf-8"))}

        return {"content": [{**entry(t, lp), "top_logprobs": [entry(a, b) for a, b in top]}
                            for t, lp, top in entries]}

    def choice_logprobs(self, i: int, j: int):
        if self.settings["logprobs"] is None:
            return None
        entries = self.tokens[i]
        if self.settings["echo"]:
            entries = self.prompt_logprobs.get(j, []) + entries
        return self.completion_logprobs(entries, 0)

    # ---------------------------------------------------- whole answers

    def completion(self) -> dict:
        choices = [{"index": i, "text": self.echoed(i // self.n) + self.texts[i],
                    "logprobs": self.choice_logprobs(i, i // self.n), "finish_reason": self.reasons[i]}
                   for i in range(len(self.texts))]
        return {"id": self.id, "object": self.kind, "created": self.created, "model": self.model,
                "choices": choices, "usage": self.usage()}

    def chat(self) -> dict:
        choices = [{"index": i, "message": {"role": "assistant", "content": self.texts[i]},
                    "logprobs": None if self.settings["logprobs"] is None else self.chat_logprobs(self.tokens[i]),
                    "finish_reason": self.reasons[i]} for i in range(len(self.texts))]
        return {"id": self.id, "object": self.kind, "created": self.created, "model": self.model,
                "choices": choices, "usage": self.usage()}

    # ---------------------------------------------------- streamed answers

    def chunk(self, choices: list[dict], chat: bool, usage: dict | None = None) -> str:
        body = {"id": self.id, "object": self.kind + ".chunk" if chat else self.kind, "created": self.created,
                "model": self.model, "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def piece(self, i: int, text: str, entries: list[tuple], reason, chat: bool, first: bool = False) -> dict:
        wants = self.settings["logprobs"] is not None
        if chat:
            delta = ({"role": "assistant", "content": text} if first else {"content": text}) if text or first else {}
            return {"index": i, "delta": delta, "logprobs": self.chat_logprobs(entries) if wants and entries else None,
                    "finish_reason": reason}
        return {"index": i, "text": text, "logprobs": self.completion_logprobs(entries, 0) if wants else None,
                "finish_reason": reason}

    def chunks(self, j: int, event: dict, chat: bool, started: set) -> str:
        """The server-sent events for one engine event of job ``j`` (one per token, as OpenAI sends them)."""
        self.take(j, event)
        if event["type"] == "prompt":  # echo with log-probabilities: the prompt's chunk per choice
            return "".join(self.chunk([self.piece(i, self.echoed(j), event["logprobs"], None, chat)], chat)
                           for i in range(j * self.n, (j + 1) * self.n))
        i = self.index(j, event)
        first = chat and i not in started
        started.add(i)
        if event["type"] == "token":
            entry = [(event["token"], event["logprob"], event["top"])]
            return self.chunk([self.piece(i, event["text"], entry, None, chat, first)], chat)
        return self.chunk([self.piece(i, event["text"], [], event["reason"], chat, first)], chat)

    async def stream(self, events, chat: bool):
        started = set()
        try:
            if self.settings["echo"] and self.settings["logprobs"] is None:
                for i in range(len(self.texts)):
                    yield self.chunk([self.piece(i, self.echoed(i // self.n), [], None, chat)], chat)
            async for j, batch in events:  # one write per batch: one step's tokens leave together
                yield "".join(self.chunks(j, event, chat, started) for event in batch)
            if self.settings["include_usage"]:
                yield self.chunk([], chat, self.usage())
            yield "data: [DONE]\n\n"
        except ApiError as error:
            yield f"data: {json.dumps(error.body())}\n\n"
        finally:  # the client went away, or all is sent: either way nothing more is decoded for it
            for job in self.jobs:
                job.cancel()
