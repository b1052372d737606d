"""``lmlab.load(path)``: one front door for every model lmlab writes or reads.

    import lmlab
    lm = lmlab.load("runs/shakespeare")            # a training run, any family (n-gram runs too)
    lm.score(["To be, or not to be"])              # [{"logprob": ..., "tokens": ..., "perplexity": ...}]
    lm.perplexity(open("valid.txt").read())        # {"perplexity", "bits_per_byte", "loss", "tokens", ...}
    lm.generate(["ROMEO:"], max_new_tokens=50, temperature=0.8, seed=1)
    lm.save("gpt2-out", format="hf")              # or "lmlab", "arpa", "savedmodel"

What ``path`` may be (:func:`artefact_kind` decides, from the files alone):

- a run folder (``lmlab train``, ``lmlab import``, ``lmlab export --format run``): ``config.json`` with ``train``
  and ``model`` sections;
- a fine-tuned folder (``lmlab finetune``, with or without LoRA): ``config.json`` naming a ``task``; its
  language model answers ``score`` and friends, ``predict`` gives the task's labels or completions;
- a Hugging Face checkpoint folder (``config.json`` with ``model_type``, safetensors): imported in memory through
  a temporary run folder (:func:`lmlab.interop.import_hf`), which lives as long as the object;
- an ARPA file (KenLM, SRILM, ours; ``.gz`` allowed) or an n-gram folder (``NGramLM.save``): a word-level
  model over whitespace-split words, scored as KenLM's ``query`` scores;
- a TensorFlow SavedModel (``lmlab export --format savedmodel``): scored and sampled through its signatures.

Every score is in nats (natural log); ``perplexity(text)`` adds bits per byte of the text's UTF-8. Loading never
runs code from the folder: weights are safetensors (or the SavedModel's own graph, which is TensorFlow's format).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lmlab.core.errors import ConfigError, DataError
from lmlab.core.io import read_json
from lmlab.evaluation.perplexity import evaluate_tokens, text_split
from lmlab.evaluation.score import Line, score_lines, scorer_for
from lmlab.interop.savedmodel import export_savedmodel
from lmlab.models import registry
from lmlab.models.ngram import NGramLM
from lmlab.runs.export import export_run
from lmlab.runs.load import LoadedRun, load_run, stored_dtype
from lmlab.tasks.folder import is_lora, load_finetuned, merge_lora, read_config
from lmlab.tokenizers import load_tokenizer

FORMATS = ("lmlab", "hf", "arpa", "savedmodel")
KINDS = ("run", "finetuned", "huggingface", "arpa", "ngram", "savedmodel")


def artefact_kind(path) -> str:
    """Which of :data:`KINDS` ``path`` holds, or a :class:`ConfigError` saying what it is not."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file or folder")
    if path.is_file():
        return "arpa"  # the one single-file model; read_arpa says clearly when it is not one
    if (path / "saved_model.pb").exists():
        return "savedmodel"
    if not (path / "config.json").exists():
        raise ConfigError(f"{path}: not a model folder (no config.json or saved_model.pb); lmlab.load takes a run, "
                          "a fine-tuned folder, a Hugging Face checkpoint folder, an n-gram folder, a SavedModel "
                          "or an ARPA file")
    config = read_json(path / "config.json", "model config")
    if not isinstance(config, dict):
        raise ConfigError(f"{path / 'config.json'}: not a JSON object")
    if "task" in config:
        return "finetuned"
    if isinstance(config.get("train"), dict) and isinstance(config.get("model"), dict):
        return "run"
    if config.get("family") == "ngram" and "format_version" in config:
        return "ngram"
    if "model_type" in config:
        return "huggingface"
    raise ConfigError(f"{path / 'config.json'}: neither an lmlab run (train and model sections), a fine-tuned "
                      "folder (task), an n-gram folder (family ngram) nor a Hugging Face config (model_type)")


def load(path, checkpoint: str = "best", dtype: str | None = None) -> "LanguageModel":
    """The model at ``path`` (see the module docstring for what it may be) as a :class:`LanguageModel`.

    ``checkpoint``: ``best`` (default) or ``last`` for runs and fine-tuned folders. ``dtype``: the inference
    precision of a neural model (``float32``, ``bfloat16``, ``int8``; default: what it holds).
    """
    path = Path(path)
    kind = artefact_kind(path)
    if kind in ("arpa", "ngram"):
        if dtype not in (None, "float32"):
            raise ConfigError(f"{path}: an n-gram model holds counts, not weights; it has no dtype {dtype!r}")
        model = NGramLM.from_arpa(path) if kind == "arpa" else NGramLM.load(path)
        return WordNGramModel(model, path, kind)
    if kind == "savedmodel":
        if dtype not in (None, "float32"):
            raise ConfigError(f"{path}: a SavedModel runs in the precision it was saved in; dtype={dtype!r} "
                              "does not apply")
        return SavedModelLM(path)
    if kind == "huggingface":
        from lmlab.interop.hf_import import import_hf

        scratch = tempfile.TemporaryDirectory(prefix="lmlab-load-")
        run_folder = Path(scratch.name) / "run"
        import_hf(path, run_folder, log=lambda *_: None)
        return RunModel(run_folder, kind, path, checkpoint, dtype, scratch=scratch)
    return RunModel(path, kind, path, checkpoint, dtype)


class LanguageModel:
    """What every loaded model answers. ``kind`` (:data:`KINDS`), ``family``, ``source`` (the path loaded)."""

    kind: str
    family: str
    source: Path

    def score(self, texts, tokens: bool = False, batch_size: int = 32) -> list[dict] | dict:
        """Per text: ``logprob`` (nats), ``tokens`` (predicted, the end token included for left-to-right
        models), ``perplexity``; ``token_strings`` and ``token_logprobs`` with ``tokens=True``. An empty text gets
        ``error``. One text (a string) gives one record, a list of texts a list."""
        raise NotImplementedError

    def perplexity(self, text: str, stride: int | None = None, batch_size: int = 8) -> dict:
        """``perplexity``, ``loss`` (nats per token), ``bits_per_byte``, ``tokens`` and ``utf8_bytes`` of ``text``."""
        raise NotImplementedError

    def generate(self, prompts, max_new_tokens: int = 100, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int = 0, stop_at_eos: bool = True) -> list[str] | str:
        """The continuation of each prompt (prompt excluded); ``temperature=0`` is greedy."""
        raise NotImplementedError

    def save(self, path, format: str = "lmlab", dtype: str | None = None, overwrite: bool = False) -> dict:
        """Write the model as ``format`` (:data:`FORMATS`) at ``path``; returns a summary of what was written."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<lmlab {self.family} model ({self.kind}) from {self.source}>"


def _one_or_many(texts):
    """``(list of texts, whether a single string was given)``."""
    if isinstance(texts, str):
        return [texts], True
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise ConfigError("texts must be a string or a list of strings")
    return texts, False


def _check_format(format: str, allowed: Sequence[str], what: str) -> None:
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format not in allowed:
        raise ConfigError(f"{what} cannot be saved as {format!r}; it saves as {', '.join(allowed)}")


def _text_bytes(text: str) -> int:
    if not isinstance(text, str):
        raise ConfigError(f"text must be a string, got {type(text).__name__}")
    return len(text.encode("utf-8"))


# ---------------------------------------------------------------- runs, fine-tunes, imports


class RunModel(LanguageModel):
    """A run folder's model (any family), a fine-tuned folder's language model, or an imported checkpoint."""

    def __init__(self, folder: Path, kind: str, source: Path, checkpoint: str, dtype: str | None, scratch=None):
        self.folder, self.kind, self.source, self.checkpoint = Path(folder), kind, Path(source), checkpoint
        self._scratch = scratch  # the temporary run of an imported checkpoint: removed with this object
        self.finetuned = None
        if kind == "finetuned":
            if dtype not in (None, "float32") and is_lora(read_config(folder)):
                raise ConfigError(f"{folder} holds LoRA adapters: merge them first (lmlab lora-merge) to load it in "
                                  f"{dtype}")
            self.finetuned = load_finetuned(folder, checkpoint)
            self.run = self._finetuned_run(dtype)
        else:
            self.run = load_run(folder, checkpoint, dtype=dtype)
        self.family = self.run.config["model"].get("family", "transformer")
        family = registry.family(self.family)
        self._objective = family.objective if family.neural else "ngram"
        self._scorers: dict = {}

    def _finetuned_run(self, dtype):
        if dtype not in (None, "float32"):  # an ordinary fine-tuned folder is a run: its LM loads in any dtype
            return load_run(self.folder, self.checkpoint, dtype=dtype)
        f = self.finetuned
        return LoadedRun(f.folder, f.config, f.lm, f.tokenizer, f.folder / "checkpoints", f.step)

    @property
    def model(self):
        return self.run.model

    @property
    def tokenizer(self):
        return self.run.tokenizer

    @property
    def step(self) -> int:
        return self.run.step

    def _scorer(self, batch_size: int):
        if batch_size not in self._scorers:  # each scorer compiles its step once
            self._scorers[batch_size] = scorer_for(self.run, batch_size)
        return self._scorers[batch_size]

    def score(self, texts, tokens: bool = False, batch_size: int = 32):
        texts, single = _one_or_many(texts)
        lines = [Line(n, t, None if t.strip() else "empty line") for n, t in enumerate(texts, 1)]
        records = list(score_lines(self._scorer(batch_size), lines, tokens))
        return records[0] if single else records

    def perplexity(self, text: str, stride: int | None = None, batch_size: int = 8) -> dict:
        utf8_bytes = _text_bytes(text)
        if self._objective == "mlm":  # pseudo-perplexity: every token masked in turn (Salazar et al. 2020)
            record = self.score(text, batch_size=batch_size)
            if "error" in record:
                raise DataError(f"nothing to score: {record['error']}")
            nats = -record["logprob"]
            return {"perplexity": math.exp(nats / record["tokens"]), "loss": nats / record["tokens"],
                    "bits_per_byte": nats / (math.log(2) * utf8_bytes), "tokens": record["tokens"],
                    "utf8_bytes": utf8_bytes, "nats": nats, "method": "pseudo-log-likelihood"}
        split = text_split(self.tokenizer, text)
        return evaluate_tokens(self.model, split, utf8_bytes, self.run.config["model"].get("block_size"),
                               batch_size, stride)

    def generate(self, prompts, max_new_tokens: int = 100, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int = 0, stop_at_eos: bool = True):
        if self._objective == "mlm":
            raise ConfigError(f"{self.source} is a masked language model: it fills masks (lmlab fill-mask) but does "
                              "not generate left to right")
        from lmlab.generate.decoder import generate_text
        from lmlab.generate.samplers import SamplerConfig

        prompts, single = _one_or_many(prompts)
        sampler = SamplerConfig(temperature=temperature, top_k=top_k, top_p=top_p)
        out = generate_text(self.model, self.tokenizer, prompts, max_new_tokens, sampler, seed, stop_at_eos)
        return out[0] if single else out

    def predict(self, texts, max_new_tokens: int | None = None) -> list[dict]:
        """A fine-tuned folder's task answers: a label with every label's probability, or a completion."""
        if self.finetuned is None:
            raise ConfigError(f"{self.source} is a {self.kind}, not a fine-tuned folder: use score or generate")
        from lmlab.tasks.predict import predict

        texts, _ = _one_or_many(texts)
        return predict(self.folder, texts, max_new_tokens=max_new_tokens, checkpoint=self.checkpoint)

    def _standalone_folder(self, scratch: Path) -> Path:
        """A folder the exporters read: this one, or for LoRA adapters their merge into ``scratch``."""
        if self.finetuned is not None and is_lora(self.finetuned.config):
            merge_lora(self.folder, scratch / "merged", self.checkpoint)
            return scratch / "merged"
        return self.folder

    def save(self, path, format: str = "lmlab", dtype: str | None = None, overwrite: bool = False) -> dict:
        allowed = ("lmlab", "arpa") if self._objective == "ngram" else ("lmlab", "hf", "savedmodel")
        _check_format(format, allowed, f"a {self.family} model")
        if dtype is not None and format != "lmlab":
            raise ConfigError(f"format {format!r} writes float32 weights; dtype={dtype!r} is for format 'lmlab'")
        path = Path(path)
        quiet = lambda *_: None  # noqa: E731 — the exporters' log lines are for the CLI
        if format == "arpa":
            if path.exists() and not overwrite:
                raise ConfigError(f"{path} exists; choose another path or give overwrite=True")
            self.model.model.to_arpa(path)
            return {"out": str(path), "format": "arpa", "counts": self.model.model.counts}
        if format == "lmlab" and self.kind == "huggingface" and dtype in (None, "float32"):
            from lmlab.interop.hf_import import import_hf

            if overwrite and path.exists():
                shutil.rmtree(path)
            return {"format": "lmlab", **import_hf(self.source, path, log=quiet)}
        with tempfile.TemporaryDirectory(prefix="lmlab-save-") as scratch:
            folder = self._standalone_folder(Path(scratch))
            if format == "hf":
                from lmlab.interop.hf_export import export_hf

                return {"format": "hf", **export_hf(folder, path, self.checkpoint, overwrite=overwrite, log=quiet)}
            if format == "savedmodel":
                return {"format": "savedmodel", **export_savedmodel(folder, path, self.checkpoint, overwrite, quiet)}
            if self._objective == "ngram":
                if overwrite and path.exists():
                    shutil.rmtree(path)
                self.model.model.save(path)
                return {"out": str(path), "format": "lmlab", "kind": "ngram"}
            dtype = dtype or stored_dtype(self.run.config)
            return {"format": "lmlab", **export_run(folder, path, dtype, self.checkpoint, overwrite, quiet)}


# ---------------------------------------------------------------- word n-grams (ARPA files, n-gram folders)


class WordNGramModel(LanguageModel):
    """An :class:`~lmlab.models.ngram.NGramLM` over whitespace-split words: each text is one sentence,
    scored after ``<s>`` with ``</s>`` at its end, as KenLM's ``query`` scores a line."""

    family = "ngram"

    def __init__(self, model, source: Path, kind: str):
        self.model, self.source, self.kind = model, Path(source), kind

    def score(self, texts, tokens: bool = False, batch_size: int = 32):
        texts, single = _one_or_many(texts)
        words = [t.split() for t in texts]
        scored = [i for i, w in enumerate(words) if w]
        scores = self.model.score([words[i] for i in scored])
        per_token = np.split(scores.log10.astype(np.float64) * math.log(10),
                             np.cumsum([len(words[i]) + 1 for i in scored])[:-1]) if scored else []
        values = dict(zip(scored, per_token))
        records = []
        for n, text in enumerate(texts):
            if n not in values:
                records.append({"line": n + 1, "text": text, "error": "empty line"})
                continue
            total = float(values[n].sum())
            record = {"line": n + 1, "text": text, "logprob": total, "tokens": len(values[n]),
                      "perplexity": math.exp(-total / len(values[n]))}
            if tokens:
                record["token_strings"] = words[n] + ["</s>"]
                record["token_logprobs"] = [float(v) for v in values[n]]
            records.append(record)
        return records[0] if single else records

    def perplexity(self, text: str, stride: int | None = None, batch_size: int = 8) -> dict:
        """Each line a sentence, an empty one too, as KenLM's ``query`` reads a file; the KenLM figures
        (``perplexity_excluding_oov``, ``oov``) as well."""
        utf8_bytes = _text_bytes(text)
        sentences = [line.split() for line in text.split("\n")]
        if sentences and text.endswith("\n"):
            sentences.pop()  # the newline ends the last line; it starts none
        result = self.model.perplexity(sentences)
        nats = -result["log10_total"] * math.log(10)
        return {**result, "loss": nats / result["tokens"], "bits_per_byte": nats / (math.log(2) * utf8_bytes),
                "utf8_bytes": utf8_bytes, "nats": nats}

    def generate(self, prompts, max_new_tokens: int = 100, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int = 0, stop_at_eos: bool = True):
        """Words sampled from the counts' own distribution until ``</s>`` (temperature and filters do not apply)."""
        if (temperature, top_k, top_p) != (1.0, 0, 1.0):
            raise ConfigError("an n-gram model samples its own distribution: temperature, top_k and top_p do not "
                              "apply to it")
        prompts, single = _one_or_many(prompts)
        out = []
        for row, prompt in enumerate(prompts):
            words: list[str] = []
            while len(words) < max_new_tokens:  # sentences one after another unless the end stops it
                words += self.model.generate(prompt.split() + words, max_new_tokens - len(words),
                                             seed=seed + row * 1_000_003 + len(words))
                if stop_at_eos:
                    break
            out.append(" ".join(words[:max_new_tokens]))
        return out[0] if single else out

    def save(self, path, format: str = "lmlab", dtype: str | None = None, overwrite: bool = False) -> dict:
        _check_format(format, ("lmlab", "arpa"), "an n-gram model")
        path = Path(path)
        if path.exists() and not overwrite:
            raise ConfigError(f"{path} exists; choose another path or give overwrite=True")
        if format == "arpa":
            self.model.to_arpa(path)
        else:
            if path.exists():
                shutil.rmtree(path)
            self.model.save(path)
        return {"out": str(path), "format": format, "order": self.model.order, "counts": self.model.counts}


# ---------------------------------------------------------------- TensorFlow SavedModels


class SavedModelLM(LanguageModel):
    """A SavedModel from ``lmlab export --format savedmodel``, through its ``score`` and ``generate`` signatures."""

    kind = "savedmodel"

    def __init__(self, folder: Path):
        import tensorflow as tf

        self.source = Path(folder)
        self.info = read_json(self.source / "lmlab_export.json", "SavedModel export info")
        if not self.info.get("tokenizer"):
            raise ConfigError(f"{folder}: the SavedModel has no tokenizer.json beside it; score it with token ids "
                              "through tf.saved_model.load")
        self.tokenizer = load_tokenizer(self.source / self.info["tokenizer"])
        self.eos_id = int(self.info["eos_token_id"])
        self.block_size = self.info.get("block_size")
        self.family = "transformer"
        self.graph = tf.saved_model.load(str(self.source))

    def _log_probs(self, stream: np.ndarray) -> np.ndarray:
        """``log p(stream[i] | stream[:i])`` for i >= 1, in windows of the block size overlapping by one token
        (the signature scores a window's tokens after its first), so each target is scored once; a stream longer
        than the block restarts its context one token earlier than ``lmlab eval``'s windows do."""
        stream = np.asarray(stream, np.int32)
        width = self.block_size or len(stream)  # the signature runs the whole window through the model
        pieces = [np.asarray(self.graph.score(stream[start:start + width][None, :])["log_probs"])[0]
                  for start in range(0, len(stream) - 1, width - 1)]
        return np.concatenate(pieces).astype(np.float64)

    def score(self, texts, tokens: bool = False, batch_size: int = 32):
        texts, single = _one_or_many(texts)
        records = []
        for n, text in enumerate(texts, 1):
            ids = np.asarray(self.tokenizer.encode(text), np.int64) if text.strip() else None
            if ids is None:
                records.append({"line": n, "text": text, "error": "empty line"})
                continue
            values = self._log_probs(np.concatenate([[self.eos_id], ids, [self.eos_id]]))
            total = float(values.sum())
            record = {"line": n, "text": text, "logprob": total, "tokens": len(values),
                      "perplexity": math.exp(-total / len(values))}
            if tokens:
                record["token_strings"] = [self.tokenizer.id_to_token(int(i)) for i in ids] + [self.tokenizer.eos_token]
                record["token_logprobs"] = [float(v) for v in values]
            records.append(record)
        return records[0] if single else records

    def perplexity(self, text: str, stride: int | None = None, batch_size: int = 8) -> dict:
        if stride is not None:
            raise ConfigError("a SavedModel is scored in windows of its block size; stride does not apply")
        utf8_bytes = _text_bytes(text)
        ids = np.asarray(self.tokenizer.encode(text), np.int64)
        if len(ids) < 2:
            raise DataError(f"perplexity needs at least 2 tokens of text, got {len(ids)}")
        values = self._log_probs(ids)
        nats = -float(values.sum())
        return {"perplexity": math.exp(nats / len(values)), "loss": nats / len(values),
                "bits_per_byte": nats / (math.log(2) * utf8_bytes), "tokens": len(values), "utf8_bytes": utf8_bytes,
                "nats": nats}

    def generate(self, prompts, max_new_tokens: int = 100, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int = 0, stop_at_eos: bool = True):
        if top_p != 1.0:
            raise ConfigError("the SavedModel's generate signature samples with temperature and top_k only")
        prompts, single = _one_or_many(prompts)
        out = []
        for prompt in prompts:
            ids = self.tokenizer.encode(prompt) or [self.eos_id]
            result = self.graph.generate(token_ids=np.array([ids], np.int32), max_new_tokens=np.int32(max_new_tokens),
                                         temperature=np.float32(temperature), top_k=np.int32(top_k),
                                         seed=np.int32(seed))
            new = [int(t) for t in np.asarray(result["new_token_ids"])[0]]
            if stop_at_eos and self.eos_id in new:
                new = new[:new.index(self.eos_id)]
            text = self.tokenizer.decode(ids + new)
            before = self.tokenizer.decode(ids)
            out.append(text[len(before):] if text.startswith(before) else self.tokenizer.decode(new))
        return out[0] if single else out

    def save(self, path, format: str = "lmlab", dtype: str | None = None, overwrite: bool = False) -> dict:
        raise ConfigError(f"{self.source} is a SavedModel, an end point: save the run it was exported from "
                          f"({self.info.get('run')}) instead")


__all__ = ["FORMATS", "KINDS", "LanguageModel", "artefact_kind", "load"]
