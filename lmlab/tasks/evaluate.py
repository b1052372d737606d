"""``lmlab evaluate-task``: a fine-tuned model scored on a test file with its task's metrics.

Classification: accuracy, macro-F1, per-class precision/recall/F1 and the
confusion matrix. Generation: the template's metrics (summarize: ROUGE;
translate: BLEU; qa: SQuAD EM/F1; a template file: ROUGE and BLEU), or those
asked for, on completions decoded greedily, by sampling or by beam search.
Test examples with the same input are merged into one with all their
targets as references. Language modelling (``--task lm``): the test text's loss, perplexity
and bits per byte, scored as ``lmlab eval --text FILE`` scores it. The metrics are written as JSON (by default
``DIR/metrics-TESTNAME.json``) and returned.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from lmlab.core.errors import ConfigError
from lmlab.core.io import atomic_open, write_json
from lmlab.core.progress import progress_bar
from lmlab.generate.search import DecodeConfig
from lmlab.tasks.classify import classify_texts
from lmlab.tasks.folder import load_finetuned
from lmlab.tasks.generate import complete
from lmlab.tasks.lm import evaluate_text
from lmlab.tasks.metrics import generation_metrics
from lmlab.tasks.metrics.classification import classification_metrics
from lmlab.tasks.readers.labelled import label_ids, read_labelled
from lmlab.tasks.readers.pairs import group_references, read_task_examples


def evaluate_task(folder, test, task: str | None = None, decode: DecodeConfig | None = None,
                  max_new_tokens: int | None = None, metrics: Sequence[str] | None = None, limit: int | None = None,
                  out=None, predictions=None, data_options: dict | None = None, checkpoint: str = "best",
                  progress: bool = False) -> dict:
    finetuned = load_finetuned(folder, checkpoint)
    if task and task != finetuned.task:
        raise ConfigError(f"{folder} was fine-tuned for {finetuned.task}, not {task}")
    options = dict(data_options or {})
    started = time.perf_counter()
    if finetuned.task == "classify":
        result, rows = _classification(finetuned, test, options, limit, progress)
    elif finetuned.task == "span":
        from lmlab.tasks.span import evaluate_span

        result, rows = evaluate_span(finetuned, test, limit, progress)
    elif finetuned.task == "lm":  # continued pre-training: the test file's loss, as lmlab eval --text scores it
        result, rows = evaluate_text(finetuned, test, progress=progress), []
    else:
        result, rows = _generation(finetuned, test, options, limit, decode or DecodeConfig(), max_new_tokens, metrics,
                                   progress)
    result = {"task": finetuned.task, "model": str(folder), "step": finetuned.step, "test": str(test),
              **result, "seconds": round(time.perf_counter() - started, 1)}
    out = Path(out) if out else Path(folder) / f"metrics-{Path(test).name.split('.')[0]}.json"
    write_json(out, result)
    if predictions:
        with atomic_open(predictions, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {**result, "metrics_file": str(out)}


def _classification(finetuned, test, options: dict, limit, progress: bool = False):
    examples = read_labelled(test, options.get("format", "auto"), options.get("text_column"),
                             options.get("label_column"))
    examples = examples[:limit] if limit else examples
    true = label_ids(examples, finetuned.labels, "test data")
    probabilities = classify_texts(finetuned, [e.text for e in examples], progress=progress)
    predicted = probabilities.argmax(axis=1)
    labels = finetuned.labels
    rows = [{"text": e.text, "label": e.label, "predicted": labels[p], "probability": float(probabilities[i, p])}
            for i, (e, p) in enumerate(zip(examples, predicted))]
    return classification_metrics(true, predicted, labels), rows


def _generation(finetuned, test, options: dict, limit, decode: DecodeConfig, max_new_tokens, metrics, progress):
    settings = finetuned.config["generate"]
    examples = read_task_examples(test, options.get("format") or settings["format"],
                                  options.get("swap", settings["swap"]),
                                  options.get("target_field") or settings["target_field"])
    examples = group_references(examples)
    examples = examples[:limit] if limit else examples
    with progress_bar(progress, "decode", " examples", len(examples), 0) as bar:
        outputs, cut = complete(finetuned, examples, decode, max_new_tokens, progress=bar.update)
    names = tuple(metrics) if metrics else finetuned.template.metrics
    lang = options.get("lang") or settings["lang"]
    scores = generation_metrics(names, outputs, [e.references for e in examples], lang)
    rows = [{"id": e.id, "prediction": o, "references": list(e.references)} for e, o in zip(examples, outputs)]
    return {"examples": len(examples), "lang": lang, "decode": decode.to_dict(), "prompts_cut": cut, **scores}, rows
