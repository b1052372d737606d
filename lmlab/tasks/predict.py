"""``lmlab predict``: labels for new texts, or completions for new inputs, from a fine-tuned folder.

A classifier gives each text its most probable label and every label's
probability. A generation model fills its template with each text as
``source`` (a QA model needs ``context`` and ``question``: give a file in any
format ``finetune`` reads). A language model fine-tuned on plain text (``--task lm``) continues each
text (a file: each non-blank line), ``max_new_tokens`` (default 50) at most.
"""

from __future__ import annotations

from typing import Sequence

from lmlab.core.errors import ConfigError
from lmlab.core.io import read_text
from lmlab.core.progress import progress_bar
from lmlab.generate.search import DecodeConfig
from lmlab.tasks.classify import classify_texts
from lmlab.tasks.folder import load_finetuned
from lmlab.tasks.generate import complete
from lmlab.tasks.lm import continue_texts
from lmlab.tasks.readers.examples import TaskExample
from lmlab.tasks.readers.labelled import read_labelled
from lmlab.tasks.readers.pairs import read_task_examples


def predict(folder, texts: Sequence[str] = (), file=None, decode: DecodeConfig | None = None,
            max_new_tokens: int | None = None, data_options: dict | None = None, checkpoint: str = "best",
            progress: bool = False) -> list[dict]:
    """Labels (with every label's probability) or completions for ``texts`` and ``file``'s inputs.

    ``progress``: a bar over the inputs on stderr."""
    if not texts and not file:
        raise ConfigError("nothing to predict: give texts or --file FILE")
    options = dict(data_options or {})
    finetuned = load_finetuned(folder, checkpoint)
    if finetuned.task == "span":
        raise ConfigError(f"{folder} answers questions from a context: score it with lmlab evaluate-task --test "
                          "FILE (SQuAD format)")
    if finetuned.task == "lm":  # continued pre-training: each text (or line of the file) is a prompt to continue
        texts = list(texts)
        if file:
            texts += [line for line in read_text(file, "prompt file").splitlines() if line.strip()]
        with progress_bar(progress, "decode", " prompts", len(texts)) as bar:
            outputs = continue_texts(finetuned, texts, decode or DecodeConfig(), max_new_tokens, progress=bar.update)
        return [{"prompt": t, "completion": o} for t, o in zip(texts, outputs)]
    if finetuned.task == "classify":
        texts = list(texts)
        if file:
            texts += [e.text for e in read_labelled(file, options.get("format", "auto"), options.get("text_column"),
                                                    None, require_labels=False)]
        probabilities = classify_texts(finetuned, texts, progress=progress)
        labels = finetuned.labels
        return [{"text": text, "label": labels[int(row.argmax())],
                 "probabilities": {label: round(float(p), 6) for label, p in zip(labels, row)}}
                for text, row in zip(texts, probabilities)]

    examples = [TaskExample({"source": text}, "", ("",), str(i), f"text {i + 1}") for i, text in enumerate(texts)]
    if file:
        settings = finetuned.config["generate"]
        examples += read_task_examples(file, options.get("format") or settings["format"],
                                       options.get("swap", settings["swap"]),
                                       options.get("target_field") or settings["target_field"])
    with progress_bar(progress, "decode", " examples", len(examples)) as bar:
        outputs, _ = complete(finetuned, examples, decode or DecodeConfig(), max_new_tokens, progress=bar.update)
    return [{"input": dict(e.fields), "completion": o} for e, o in zip(examples, outputs)]
