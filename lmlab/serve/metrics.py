"""The server's counters, written out in Prometheus' text format (``GET /metrics``).

Requests by endpoint and status, prompt and generated tokens, cancelled requests, hot reloads, the queue and
the running batch, time to first token (a histogram) and tokens/s over the last
:data:`RATE_WINDOW_S` seconds. Updated from the engine thread and the event loop, under one lock.
"""

from __future__ import annotations

import collections
import threading
import time

TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RATE_WINDOW_S = 10.0


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests: collections.Counter = collections.Counter()  # (endpoint, status) -> count
        self.prompt_tokens = self.generated_tokens = self.cancelled = self.reloads = 0
        self.queue_length = self.running = 0
        self.ttft_counts = [0] * len(TTFT_BUCKETS)
        self.ttft_sum, self.ttft_count = 0.0, 0
        self.recent: collections.deque = collections.deque()  # (time, tokens) of recent steps

    def count_request(self, endpoint: str, status: int) -> None:
        with self.lock:
            self.requests[endpoint, status] += 1

    def count_prompt(self, tokens: int) -> None:
        with self.lock:
            self.prompt_tokens += tokens

    def count_cancelled(self, jobs: int) -> None:
        with self.lock:
            self.cancelled += jobs

    def count_reload(self) -> None:
        with self.lock:
            self.reloads += 1

    def set_load(self, queue_length: int, running: int) -> None:
        with self.lock:
            self.queue_length, self.running = queue_length, running

    def observe_first_token(self, seconds: float) -> None:
        with self.lock:
            self.ttft_sum += seconds
            self.ttft_count += 1
            for i, bound in enumerate(TTFT_BUCKETS):
                self.ttft_counts[i] += seconds <= bound
            self.generated_tokens += 1
            self.recent.append((time.monotonic(), 1))

    def count_step(self, tokens: int, seconds: float) -> None:
        del seconds  # the rate is over wall time, idle gaps included
        with self.lock:
            self.generated_tokens += tokens
            self.recent.append((time.monotonic(), tokens))

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        while self.recent and self.recent[0][0] < now - RATE_WINDOW_S:
            self.recent.popleft()
        return sum(tokens for _, tokens in self.recent) / RATE_WINDOW_S

    def render(self) -> str:
        with self.lock:
            lines = ["# HELP lmlab_requests_total HTTP requests by endpoint and status code.",
                     "# TYPE lmlab_requests_total counter"]
            for (endpoint, status), count in sorted(self.requests.items()):
                lines.append(f'lmlab_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}')
            for name, kind, value, help_text in (
                    ("prompt_tokens_total", "counter", self.prompt_tokens, "Prompt tokens read."),
                    ("generation_tokens_total", "counter", self.generated_tokens, "Tokens generated."),
                    ("requests_cancelled_total", "counter", self.cancelled, "Requests whose client went away."),
                    ("reloads_total", "counter", self.reloads, "Checkpoints swapped in while serving."),
                    ("queue_length", "gauge", self.queue_length, "Requests waiting for a slot."),
                    ("running_sequences", "gauge", self.running, "Sequences in the decoding batch."),
                    ("tokens_per_second", "gauge", round(self.tokens_per_second(), 3),
                     f"Tokens generated per second over the last {RATE_WINDOW_S:g} s.")):
                lines += [f"# HELP lmlab_{name} {help_text}", f"# TYPE lmlab_{name} {kind}", f"lmlab_{name} {value}"]
            lines += ["# HELP lmlab_time_to_first_token_seconds From a request's arrival to its first token.",
                      "# TYPE lmlab_time_to_first_token_seconds histogram"]
            for bound, count in zip(TTFT_BUCKETS, self.ttft_counts):
                lines.append(f'lmlab_time_to_first_token_seconds_bucket{{le="{bound}"}} {count}')
            lines += [f'lmlab_time_to_first_token_seconds_bucket{{le="+Inf"}} {self.ttft_count}',
                      f"lmlab_time_to_first_token_seconds_sum {self.ttft_sum:.6f}",
                      f"lmlab_time_to_first_token_seconds_count {self.ttft_count}"]
            return "\n".join(lines) + "\n"
