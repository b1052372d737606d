"""The engine: one thread that owns the model and runs the continuous batch for every request.

The HTTP side (:mod:`lmlab.serve.app`) turns a request into :class:`Job`\\ s and hands them to
:meth:`Engine.submit`; the engine thread admits them between decoding calls (each up to
:data:`~lmlab.generate.batching.CHUNK` tokens for every slot), as slots free up
(:class:`~lmlab.generate.batching.SlotBatch`, or :class:`~lmlab.generate.batching.CountSlots` for an
n-gram), and sends each job its events through the job's
``emit`` callback, a list at a time: what one prefill or one batch step made for the job (the HTTP
side passes one that puts them on its asyncio queue, and writes each list out in one piece). Only this
thread touches the model, so the model needs no locks and the event loop never waits on it.

Events, as dicts with a ``type``: ``prompt`` (the echoed prompt's log-probabilities), ``token``
(one new token of one choice and the text it lets out), ``finish`` (a choice is done, with its
``reason``: ``stop`` for the end token or a stop string, ``length`` for ``max_tokens``) and
``error``. A job whose ``cancelled`` is set (its client went away) leaves the batch at the next
call, freeing its slots. Hot reload (:mod:`lmlab.serve.reload`) swaps weights through
:meth:`Engine.call_soon`, also between calls.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lmlab.generate.batching import slots_for
from lmlab.generate.samplers import SamplerConfig
from lmlab.serve.metrics import Metrics
from lmlab.serve.sampling import top_log_probs
from lmlab.serve.text import TextStream

log = logging.getLogger("lmlab.serve")


class QueueFull(Exception):
    """More requests are waiting than the server's bound allows (HTTP 429)."""


@dataclass
class Job:
    """One prompt of one request: ``n`` choices of up to ``max_tokens`` tokens each."""

    prompt: list[int]  # what the model reads: the end token first, as a text starts in training
    sampler: SamplerConfig
    max_tokens: int
    emit: Callable[[list[dict]], None]
    n: int = 1
    seed: int | None = None
    logprobs: int | None = None  # top alternatives per token; None: no log-probabilities
    echo: bool = False
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    left: int = 0  # choices not yet finished, counted against the server's bound

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class Choice:
    """One sequence being decoded, in one slot."""

    job: Job
    index: int
    text: TextStream
    made: int = 0


def choice_rng(seed: int | None, index: int) -> np.random.Generator:
    """Choice ``index``'s draws: the same for the same seed whatever else runs; fresh ones without a seed."""
    return np.random.default_rng(None if seed is None else [int(seed) % 2**63, index])


class Engine:
    def __init__(self, model, tokenizer, slots: int = 8, max_queue: int = 64, context: int | None = None,
                 metrics: Metrics | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.batch = slots_for(model, slots, context)
        self.context, self.max_queue = self.batch.context, int(max_queue)
        self.metrics = metrics or Metrics()
        self.pending: collections.deque[Job] = collections.deque()
        self.running: dict[int, Choice] = {}  # slot -> choice
        self.outbox: dict[int, tuple[Job, list]] = {}  # id(job) -> (job, events not yet emitted)
        self.outstanding = 0  # choices submitted and not yet finished: waiting, being prefilled or running
        self.wake = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="lmlab-engine", daemon=True)
        self.between_steps: list[Callable[[], None]] = []  # run by the engine thread before each step (reloads)
        self.served: dict = {}  # which checkpoint the weights are: {"checkpoint", "step"} (GET /health)

    # ------------------------------------------------------------ the HTTP side's calls

    def start(self) -> "Engine":
        self.warm_up()
        self.thread.start()
        return self

    def stop(self) -> None:
        with self.wake:
            self.stopping = True
            self.wake.notify()
        self.thread.join(timeout=10)

    def submit(self, jobs: list[Job]) -> None:
        """Queue all of ``jobs`` (one request's prompts) or none: :class:`QueueFull` past the bound."""
        with self.wake:
            wanted = sum(job.n for job in jobs)
            if self.outstanding + wanted > self.batch.slots + self.max_queue:
                raise QueueFull(f"{self.outstanding} sequences are running or waiting already (at most "
                                f"{self.batch.slots} running and {self.max_queue} waiting)")
            self.outstanding += wanted
            for job in jobs:
                job.left = job.n
            self.pending.extend(jobs)
            self.metrics.set_load(len(self.pending), len(self.running))
            self.wake.notify()

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the engine thread between two steps (where the model may change)."""
        with self.wake:
            self.between_steps.append(fn)
            self.wake.notify()

    def free_slots(self) -> int:
        return self.batch.slots - len(self.running)

    def warm_up(self) -> None:
        """Compile the step, the first-token pick and the slot copy before the first request (the slow calls)."""
        eos, rng = self.tokenizer.eos_id, np.random.default_rng(0)
        for sampler in (SamplerConfig(temperature=0), SamplerConfig(temperature=1.0, top_k=2, top_p=0.9)):
            log_probs, row = self.batch.prefill([eos])
            self.batch.place(0, row, 1, self.batch.pick(log_probs, sampler, rng), 2, sampler, rng, None)
            self.batch.step()
            self.batch.release(0)

    # ------------------------------------------------------------ the engine thread

    def _loop(self) -> None:
        while True:
            with self.wake:
                while not (self.stopping or self.running or self.pending or self.between_steps):
                    self.wake.wait()
                if self.stopping:
                    return
                calls, self.between_steps = self.between_steps, []
            try:
                for call in calls:
                    call()
                self._drop_cancelled()
                self._admit()
                if self.running:
                    self._step()
            except Exception as error:  # a bug must not kill the server: fail what was running, go on
                log.exception("engine step failed")
                for slot in list(self.running):
                    self._finish(slot, None, error=f"{type(error).__name__}: {error}")
            self._flush()
            self.metrics.set_load(len(self.pending), len(self.running))

    def _send(self, job: Job, event: dict) -> None:
        self.outbox.setdefault(id(job), (job, []))[1].append(event)

    def _flush(self) -> None:
        """Hand every job what it got since the last flush, in one call each."""
        for job, events in self.outbox.values():
            job.emit(events)
        self.outbox.clear()

    def _drop_cancelled(self) -> None:
        gone = set()
        for slot, choice in list(self.running.items()):
            if choice.job.cancelled.is_set():
                self.batch.release(slot)
                del self.running[slot]
                gone.add(id(choice.job))
                self._retire(choice.job, 1)
        self.metrics.count_cancelled(len(gone))
        with self.wake:
            kept = [job for job in self.pending if not job.cancelled.is_set()]
            self.metrics.count_cancelled(len(self.pending) - len(kept))
            for job in self.pending:
                if job.cancelled.is_set():
                    self._retire(job, job.left)
            self.pending = collections.deque(kept)

    def _retire(self, job: Job, choices: int) -> None:
        with self.wake:
            self.outstanding -= choices
            job.left -= choices

    def _admit(self) -> None:
        """Prefill waiting jobs, first come first served, while their choices fit the free slots."""
        while True:
            with self.wake:
                if not self.pending or self.pending[0].n > self.free_slots():
                    return
                job = self.pending.popleft()
            try:
                self._start(job)
            except Exception as error:
                log.exception("prefill failed")
                for slot in [s for s, c in self.running.items() if c.job is job]:
                    self.running.pop(slot)
                    self.batch.release(slot)
                self._retire(job, job.left)
                self.outbox.pop(id(job), None)
                job.emit([{"type": "error", "message": f"{type(error).__name__}: {error}"}])
            self._flush()  # its first tokens go out now, not after the next step

    def _start(self, job: Job) -> None:
        want_prompt = job.echo and job.logprobs is not None
        log_probs, row = self.batch.prefill(job.prompt, every_position=want_prompt)
        self.metrics.count_prompt(len(job.prompt) - 1)
        if want_prompt:  # row t is the distribution of token t + 1
            self._send(job, {"type": "prompt", "logprobs": [
                (token, float(log_probs[t][token]), top_log_probs(log_probs[t], job.logprobs))
                for t, token in enumerate(job.prompt[1:])]})
            log_probs = log_probs[-1]
        if job.max_tokens == 0:
            self._retire(job, job.n)
            for index in range(job.n):
                self._send(job, {"type": "finish", "choice": index, "reason": "length", "text": "", "tokens": 0})
            return
        free = [slot for slot in range(self.batch.slots) if slot not in self.running]
        eos = None if job.ignore_eos else self.tokenizer.eos_id
        for index, slot in zip(range(job.n), free):
            rng = choice_rng(job.seed, index)
            self.running[slot] = Choice(job, index, TextStream(self.tokenizer, job.prompt[1:], job.stop))
            token = self.batch.pick(log_probs, job.sampler, rng)
            top = top_log_probs(log_probs, job.logprobs) if job.logprobs is not None else None
            if self._take(slot, token, float(log_probs[token]), top):  # it goes on: decode it from the next step
                self.batch.place(slot, row, len(job.prompt), token, job.max_tokens - 1, job.sampler, rng, eos)

    def _step(self) -> None:
        started = time.monotonic()
        tokens, chosen, top_ids, top_values = self.batch.step(hurry=bool(self.pending))
        made = 0
        for slot, choice in list(self.running.items()):
            k = choice.job.logprobs
            for t in range(tokens.shape[1]):
                top = None if k is None else [(int(i), float(v)) for i, v in zip(top_ids[slot, t, :k],
                                                                                 top_values[slot, t, :k])
                                              if v > -np.inf]  # a vocabulary smaller than k: padding
                made += 1
                if not self._take(slot, int(tokens[slot, t]), float(chosen[slot, t]), top):
                    break
        self.metrics.count_step(made, time.monotonic() - started)

    def _take(self, slot: int, token: int, logprob: float, top) -> bool:
        """Hand out ``token``, the newest of the choice in ``slot``; finish the choice or say it goes on."""
        choice = self.running[slot]
        job = choice.job
        choice.made += 1
        if choice.made == 1:
            self.metrics.observe_first_token(time.monotonic() - job.submitted)
        ended_by_eos = token == self.tokenizer.eos_id and not job.ignore_eos
        text = "" if ended_by_eos else choice.text.add(token)
        self._send(job, {"type": "token", "choice": choice.index, "token": token, "text": text,
                         "logprob": logprob, "top": top})
        if ended_by_eos or choice.text.stopped:
            self._finish(slot, "stop")
        elif choice.made >= job.max_tokens:
            self._finish(slot, "length")
        else:
            return True
        return False

    def _finish(self, slot: int, reason: str | None, error: str | None = None) -> None:
        choice = self.running.pop(slot)
        self.batch.release(slot)
        self._retire(choice.job, 1)
        if error is not None:
            self._send(choice.job, {"type": "error", "message": error})
            return
        self._send(choice.job, {"type": "finish", "choice": choice.index, "reason": reason,
                                "text": choice.text.flush(), "tokens": choice.made})
