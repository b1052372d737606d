"""An lm-evaluation-harness model for lmlab's decoder runs, registered with the harness as ``lmlab``.

Importing this module registers :class:`LmlabLM` (``lm_eval.api.registry.register_model``); the
harness's own command line does not import third-party models, so ``lmlab harness`` (or
:func:`evaluate`) is the way in from the shell. Three request types, batched:

* ``loglikelihood(context, continuation)``: the harness's own split of the tokens (it encodes
  ``context + continuation`` and ``context``); every encoding starts with the end token, the
  document start lmlab's decoders were trained with (as a BOS-adding tokenizer does for the
  harness's Hugging Face model; an empty context is the end token alone). Then ``log p(continuation
  | context)`` by the chain rule, the same log-softmax ``lmlab score`` uses, so ``loglikelihood("",
  text)`` is ``lmlab score``'s ``logprob`` less its end token's; and whether every
  continuation token is the argmax. A pair longer than the context window keeps its last
  ``block + 1`` tokens, as the harness's Hugging Face model does.
* ``loglikelihood_rolling(text)``: the text after the end token, in ``lmlab eval``'s windows
  (:class:`~lmlab.evaluation.score.CausalScorer`), without the end token ``lmlab score`` adds:
  ``lmlab score``'s ``logprob`` minus its last token's.
* ``generate_until(context, {until, max_gen_toks, do_sample, temperature, top_k, top_p})``:
  :func:`lmlab.generate.decoder.generate_ids` after the end token and the context (greedy unless
  ``do_sample``), ``max_gen_toks`` tokens or up to the end token; the text is cut before the first
  ``until`` string (generation does not stop early at one).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from keras import ops

from lmlab.core.backend import compile_function
from lmlab.core.errors import ConfigError
from lmlab.core.extras import require
from lmlab.evaluation.score import CausalScorer
from lmlab.generate.decoder import generate_ids
from lmlab.generate.samplers import SamplerConfig
from lmlab.models import registry
from lmlab.runs.load import LoadedRun, load_run

lm_eval_model = require("lm_eval.api.model", "the lm-evaluation-harness model")
lm_eval_registry = require("lm_eval.api.registry", "the lm-evaluation-harness model")

MAX_GEN_TOKS = 256


def _batch_size(value, default: int = 16) -> int:
    if value in (None, "", "auto") or str(value).startswith("auto"):
        return default  # the harness's "auto" probes GPU memory; a fixed size is enough here
    size = int(value)
    if size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {value!r}")
    return size


@lm_eval_registry.register_model("lmlab")
class LmlabLM(lm_eval_model.TemplateLM):
    """A decoder run (folder or :class:`LoadedRun`) as a harness model; ``model_args``: ``run=FOLDER``."""

    def __init__(self, run, checkpoint: str = "best", batch_size=16, max_gen_toks: int = MAX_GEN_TOKS,
                 seed: int = 0, max_batch_size=None, device=None, **unused):
        super().__init__()
        self.run = run if isinstance(run, LoadedRun) else load_run(run, checkpoint)
        family = registry.family(self.run.config["model"].get("family", "transformer"))
        if not family.neural or family.objective == "mlm":
            raise ConfigError(f"the harness model needs a decoder run; {self.run.folder} is "
                              f"{self.run.config['model'].get('family')}")
        self.model, self.lmlab_tokenizer = self.run.model, self.run.tokenizer
        self.block = self.model.config.block_size
        self.batch_size = _batch_size(batch_size)
        self.max_gen_toks, self.seed = int(max_gen_toks), int(seed)
        self.scorer = CausalScorer(self.model, self.lmlab_tokenizer, self.batch_size)
        model = self.model

        def scored(x, y):  # (B, T) inputs and targets -> target log-probs, and 1 where the target is the argmax
            from lmlab.training.steps import token_loss

            logits = model(x, training=False)
            greedy = ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), ops.cast(y, "int32"))
            return -token_loss(y, logits), ops.cast(greedy, "int32")

        self._scored = compile_function(scored)

    # ------------------------------------------------------------ the tokenizer, as the harness asks for it

    @property
    def eot_token_id(self) -> int:
        return self.lmlab_tokenizer.eos_id

    @property
    def max_length(self) -> int:
        return self.block

    def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
        # The end token first, as a text follows one in training (and in lmlab score); the harness asks
        # for add_special_tokens=False where it adds the prefix itself (an empty context).
        ids = list(self.lmlab_tokenizer.encode(string))
        return ids if add_special_tokens is False else [self.eot_token_id, *ids]

    def tok_decode(self, tokens: Sequence[int], **kwargs) -> str:
        return self.lmlab_tokenizer.decode(list(tokens))

    # ------------------------------------------------------------ the three request types

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        rows = []  # (request, x, y, number of continuation targets)
        for index, (_, context, continuation) in enumerate(requests):
            full = (list(context) + list(continuation))[-(self.block + 1):]
            count = min(len(continuation), len(full) - 1)
            rows.append((index, np.asarray(full[:-1], np.int32), np.asarray(full[1:], np.int32), count))
        out: list[tuple[float, bool]] = [(0.0, True)] * len(requests)
        rows.sort(key=lambda row: len(row[1]))
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            width = self.scorer.width(max(len(row[1]) for row in chunk))
            x = np.zeros((self.batch_size, width), np.int32)  # (B, T): full batches, few compiled shapes
            y = np.zeros((self.batch_size, width), np.int32)
            for b, (_, xs, ys, _) in enumerate(chunk):
                x[b, :len(xs)], y[b, :len(ys)] = xs, ys
            values, greedy = (np.asarray(v) for v in self._scored(x, y))
            for b, (index, xs, _, count) in enumerate(chunk):
                where = slice(len(xs) - count, len(xs))  # the continuation's targets, last in the row
                out[index] = (float(values[b, where].astype(np.float64).sum()), bool(greedy[b, where].all()))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        sequences = [np.asarray(self.tok_encode(r.args[0], add_special_tokens=False), np.int64) for r in requests]
        results = []
        for start in range(0, len(sequences), 256):
            for values, _ in self.scorer.score(sequences[start:start + 256]):
                results.append(float(values[:-1].sum()))  # the end token lmlab score adds is not the text's
        return results

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out: list[str] = [""] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(self._settings(request.args[1]), []).append(index)
        for (until, max_tokens, sampler), indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                prompts = [self.tok_encode(requests[i].args[0]) for i in chunk]
                new = generate_ids(self.model, prompts, max_tokens, sampler, self.seed, self.eot_token_id)
                for i, prompt, ids in zip(chunk, prompts, new):
                    out[i] = _cut(self._continuation(prompt, ids), until)
        return out

    def _settings(self, kwargs: dict) -> tuple:
        kwargs = dict(kwargs or {})
        until = kwargs.pop("until", None) or []
        until = (until,) if isinstance(until, str) else tuple(until)
        max_tokens = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
        sample = kwargs.pop("do_sample", False)
        temperature = float(kwargs.pop("temperature", 1.0 if sample else 0.0))
        sampler = SamplerConfig(temperature=temperature if sample else 0.0, top_k=int(kwargs.pop("top_k", 0) or 0),
                                top_p=float(kwargs.pop("top_p", 1.0) or 1.0))
        return until, max_tokens, sampler

    def _continuation(self, prompt: list[int], new: list[int]) -> str:
        # Decode with the prompt so joins come out right (a word tokenizer's spaces, BPE merges).
        new = [t for t in new if t != self.eot_token_id]
        before, after = self.tok_decode(prompt), self.tok_decode(prompt + new)
        return after[len(before):] if after.startswith(before) else self.tok_decode(new)


def _cut(text: str, until: Sequence[str]) -> str:
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


def evaluate(run, tasks: Sequence[str], include_path=None, limit=None, num_fewshot=None, batch_size: int = 16,
             checkpoint: str = "best", log_samples: bool = False, **kwargs) -> dict:
    """``lm_eval.simple_evaluate`` with an lmlab run; ``include_path``: a folder of your own task YAMLs."""
    evaluator = require("lm_eval.evaluator", "lmlab harness")
    tasks_module = require("lm_eval.tasks", "lmlab harness")
    manager = tasks_module.TaskManager(include_path=str(include_path) if include_path else None)
    return evaluator.simple_evaluate(model=LmlabLM(run, checkpoint, batch_size), tasks=list(tasks),
                                     num_fewshot=num_fewshot, limit=limit, task_manager=manager,
                                     log_samples=log_samples, **kwargs)
