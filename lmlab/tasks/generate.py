"""Conditional generation: prompt → completion fine-tuning, and completing prompts with a fine-tuned model.

Training sequences are ``prompt + completion + end``; the loss counts the
completion and the end token only (:class:`lmlab.tasks.batching.CompletionData`).
The language of the targets (``lang`` auto: Chinese when ideographs dominate a
sample of them) decides how metrics tokenise.
"""

from __future__ import annotations

import math
from typing import Sequence

from lmlab.core.errors import ConfigError
from lmlab.tasks.batching import CompletionData, held_out_loss
from lmlab.tasks.config import FinetuneConfig
from lmlab.tasks.prompts import fit_prompt, training_sequence
from lmlab.tasks.readers.examples import TaskExample, split_off
from lmlab.tasks.readers.pairs import read_task_examples
from lmlab.tasks.readers.templates import load_template
from lmlab.tokenizers.segment import detect_lang


def targets_lang(examples: Sequence[TaskExample], lang: str = "auto") -> str:
    if lang != "auto":
        return lang
    return detect_lang(" ".join(e.target for e in examples[:500]))


class GenerateTask:
    def __init__(self, config: FinetuneConfig, tokenizer, block_size: int, options: dict, log=print):
        self.config, self.tokenizer, self.block_size, self.options, self.log = config, tokenizer, block_size, options, log
        self.template = load_template(config.template)
        self.lm = self.head = None

    def _read(self, path):
        o = self.options
        return read_task_examples(path, o.get("format", "auto"), o.get("swap", False), o.get("target_field", "target"),
                                  o.get("limit"))

    def read(self, train, valid) -> None:
        c = self.config
        train_examples = self._read(train)
        if valid:
            valid_examples = self._read(valid)
        else:
            train_examples, valid_examples = split_off(train_examples, c.valid_fraction, c.seed, str(train))
        self.lang = targets_lang(train_examples, c.lang)
        self.train_data, train_cut = self._encode(train_examples)
        self.valid_data, valid_cut = self._encode(valid_examples)
        self.cut = train_cut + valid_cut
        longest = max(len(s) - p for s, p in zip(self.train_data.sequences, self.train_data.prompt_lengths))
        self.max_new_tokens = min(c.max_new_tokens or longest, self.block_size)
        self.log(f"{len(train_examples):,} training and {len(valid_examples):,} validation examples, template "
                 f"{self.template.name!r}, targets in {self.lang}, up to {self.max_new_tokens} new tokens")
        if self.cut:
            self.log(f"warning: {self.cut:,} prompts were longer than the context and had their "
                     f"{self.template.truncate_field} cut to fit")

    def _encode(self, examples: Sequence[TaskExample]) -> tuple[CompletionData, int]:
        sequences, prompts, cut = [], [], 0
        for example in examples:
            sequence, prompt_length, truncated = training_sequence(self.tokenizer, self.template, example,
                                                                   self.block_size, self.config.truncate_source)
            sequences.append(sequence)
            prompts.append(prompt_length)
            cut += truncated
        return CompletionData(sequences, prompts, self.block_size), cut

    def build(self, lm):
        self.lm = lm
        return lm

    def validate(self, stepper) -> dict:
        total, count = held_out_loss(stepper, self.valid_data, self.config.batch_size)
        loss = total / count
        return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50)), "val_score": -loss}

    @staticmethod
    def describe(metrics: dict) -> str:
        return f"val completion loss {metrics['val_loss']:.4f} (perplexity {metrics['val_perplexity']:.2f})"

    def settings(self) -> dict:
        o = self.options
        return {"template": self.template.to_dict(), "max_new_tokens": self.max_new_tokens, "lang": self.lang,
                "format": o.get("format", "auto"), "swap": bool(o.get("swap", False)),
                "target_field": o.get("target_field", "target"), "prompts_cut": self.cut}


def complete(finetuned, examples: Sequence[TaskExample], decode_config, max_new_tokens: int | None = None,
             truncate: bool | None = None, progress=None) -> tuple[list[str], int]:
    """Each example's completion as text (stripped, without the end token), and how many prompts were cut."""
    settings = finetuned.config["generate"]
    max_new = max_new_tokens or settings["max_new_tokens"]
    truncate = finetuned.config["finetune"]["truncate_source"] if truncate is None else truncate
    block = check_new_tokens(finetuned.lm, max_new)
    prompts, cut = [], 0
    for example in examples:
        prompt, _, truncated = fit_prompt(finetuned.tokenizer, finetuned.template, example, block - max_new + 1,
                                               truncate, block)
        prompts.append(prompt)
        cut += truncated
    outputs = decode_prompts(finetuned.lm, finetuned.tokenizer, prompts, max_new, decode_config, progress)
    return [output.strip() for output in outputs], cut


def check_new_tokens(lm, max_new: int) -> int:
    """The model's block size, once ``max_new`` new tokens are known to fit in it."""
    block = lm.config.block_size
    if not 1 <= max_new <= block:
        raise ConfigError(f"max_new_tokens must be in [1, {block}] for this model, got {max_new}")
    return block


def decode_prompts(lm, tokenizer, prompts: Sequence[Sequence[int]], max_new: int, decode_config,
                   progress=None) -> list[str]:
    """Each token prompt's continuation as text, without the end token."""
    from lmlab.generate.search import decode  # Keras: not for light commands

    eos, outputs = tokenizer.eos_id, []
    for i, prompt in enumerate(prompts):
        # Each prompt samples from its own seed, so one input's draw does not depend on the others.
        new = decode(lm, prompt, max_new, decode_config, eos, seed=decode_config.seed + i)
        outputs.append(tokenizer.decode(new[:-1] if new and new[-1] == eos else new))
        if progress:
            progress(1)
    return outputs
