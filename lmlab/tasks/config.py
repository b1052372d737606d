"""The fine-tuning configuration: one validated, JSON-serialisable record, stored in the result folder.

Defaults suit the small models lmlab pre-trains on a CPU: AdamW at 3e-4 with
6% linear warm-up and cosine decay to a tenth (the pre-training schedule of
:func:`lmlab.training.trainer.build_optimizer`), weight decay 0.01 on
matrices, batches of 32, three epochs, the best checkpoint by validation
accuracy (classification) or loss (generation, language modelling).
"""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.core.errors import ConfigError
from lmlab.core.records import Record, is_int, is_real
from lmlab.models.lora import DEFAULT_TARGETS, check_settings, parse_targets
from lmlab.tasks.augment.operations import parse_operations

TASKS = ("classify", "generate", "span", "lm")  # span: extractive QA with an encoder (lmlab.tasks.span);
# lm: continued pre-training on plain text (lmlab.tasks.lm)
POOLINGS = ("last", "mean", "cls")
CLASS_WEIGHTS = ("none", "balanced")


@dataclass(frozen=True)
class FinetuneConfig(Record):
    record_name = "fine-tuning config"

    task: str = "classify"
    # classification
    pooling: str = "last"
    freeze: bool = False  # train only the head
    class_weights: str = "none"  # none | balanced (n / (k * count)) | comma-separated weights in label order
    max_length: int = 0  # tokens per text, end token included (longer texts keep their start); 0: the context
    # generation
    template: str = "summarize"  # summarize | qa | translate | a template file
    truncate_source: bool = False  # cut an over-long source to fit instead of stopping
    max_new_tokens: int = 0  # decoding budget; 0: the longest training completion + 1, at most the context
    # extractive QA (span)
    doc_stride: int = 0  # tokens between the starts of a context's windows; 0: half a window
    max_answer_tokens: int = 30  # the longest span predicted (BERT's run_squad max_answer_length)
    # data
    augment: str = ""  # augmentation operations for the training texts, e.g. "sr=0.1,rd=0.1"; "" for none
    augment_copies: int = 4
    valid_fraction: float = 0.1  # held out of the training file when no validation file is given
    lang: str = "auto"  # auto | en | zh: metrics (ROUGE/BLEU/SQuAD) and augmentation
    # optimisation
    epochs: float = 3.0
    max_steps: int = 0  # 0: from epochs
    batch_size: int = 32
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    grad_clip: float = 1.0
    eval_interval: int = 0  # optimizer steps between validations; 0: once per epoch
    early_stopping: int = 0  # validations without improvement before stopping; 0: never
    checkpoint_interval: int = 0  # optimizer steps between resume checkpoints (--resume); 0: at every validation
    seed: int = 0
    # LoRA (lmlab.models.lora): adapters of this rank on the targets, the rest frozen; 0 trains every weight
    lora_rank: int = 0
    lora_alpha: float = 0.0  # 0: the rank (scaling alpha / rank = 1)
    lora_targets: str = DEFAULT_TARGETS

    def __post_init__(self):
        _choice(self, "task", TASKS)
        _choice(self, "pooling", POOLINGS)
        _choice(self, "lang", ("auto", "en", "zh"))
        for name in ("freeze", "truncate_source"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("batch_size", "augment_copies", "max_answer_tokens"):
            _integer(self, name, 1)
        for name in ("max_steps", "max_new_tokens", "max_length", "eval_interval", "early_stopping", "seed",
                     "doc_stride", "checkpoint_interval"):
            _integer(self, name, 0)
        for name in ("learning_rate", "epochs"):
            if not is_real(getattr(self, name)) or getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a number > 0, got {getattr(self, name)!r}")
        for name in ("weight_decay", "grad_clip"):
            if not is_real(getattr(self, name)) or getattr(self, name) < 0:
                raise ConfigError(f"{name} must be a number >= 0, got {getattr(self, name)!r}")
        for name in ("warmup_ratio", "valid_fraction"):
            if not is_real(getattr(self, name)) or not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        _integer(self, "lora_rank", 0)
        if not is_real(self.lora_alpha) or self.lora_alpha < 0:
            raise ConfigError(f"lora_alpha must be a number > 0 (or 0: the rank), got {self.lora_alpha!r}")
        if self.lora_rank:
            check_settings(self.lora_rank, self.lora_alpha or self.lora_rank)
            parse_targets(self.lora_targets)
            if self.freeze:
                raise ConfigError("--freeze trains the head only and LoRA trains adapters: choose one")
        self.class_weight_values(1)  # the spelling; the count is checked against the labels later
        if self.augment:
            parse_operations(self.augment)
            if self.task != "classify":
                raise ConfigError("--augment applies to classification data (--task classify)")

    def class_weight_values(self, count: int | None) -> list[float] | str:
        """``"none"``/``"balanced"``, or the explicit weights (checked to number ``count`` if given)."""
        spec = str(self.class_weights).strip()
        if spec in CLASS_WEIGHTS:
            return spec
        try:
            values = [float(part) for part in spec.split(",")]
        except ValueError:
            raise ConfigError(f"class_weights must be none, balanced or numbers like 1,3; got {spec!r}") from None
        if any(v <= 0 for v in values):
            raise ConfigError(f"class weights must be > 0, got {spec!r}")
        if count is not None and count > 1 and len(values) != count:
            raise ConfigError(f"{len(values)} class weights for {count} labels")
        return values


def _integer(config, name: str, minimum: int) -> None:
    value = getattr(config, name)
    if not is_int(value) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _choice(config, name: str, choices) -> None:
    if getattr(config, name) not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {getattr(config, name)!r}")
