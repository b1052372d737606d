"""SQuAD v1.1 / v2.0 JSON (and Chinese sets in the same layout, such as CMRC 2018 and DRCD).

Each question becomes a :class:`TaskExample` with fields ``context``,
``question`` and ``title``; its references are the annotators' answer texts
(duplicates kept, as the official script keeps them) and its target is the
first. A v2.0 question marked ``is_impossible`` has the empty answer as its
only reference: the official v2.0 script scores an empty prediction as
"no answer".

Each answer's ``answer_start`` (its character offset in the context) is kept
in ``starts``, moved with the stripping of the context and the answer. An
offset where the context does not hold the answer text is replaced by the
nearest occurrence of the text (counted and logged); an answer absent from its
context is an error. Files without offsets (``starts`` of ``None``) leave the
span task to find the first occurrence.
"""

from __future__ import annotations

from pathlib import Path

from lmlab.core.errors import DataError
from lmlab.core.io import read_json
from lmlab.tasks.readers.examples import TaskExample


def read_squad(path, log=None) -> list[TaskExample]:
    """The file's questions; ``log`` hears how many answers were not at their ``answer_start``."""
    path = Path(path)
    moved = 0
    document = read_json(path, "SQuAD file")
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise DataError(f"{path}: not a SQuAD file (expected an object with a 'data' list of articles)")
    examples = []
    for a, article in enumerate(document["data"]):
        title = str(article.get("title", "")) if isinstance(article, dict) else ""
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise DataError(f"{path}: article {a} ({title or 'untitled'}) has no 'paragraphs' list")
        for p, paragraph in enumerate(paragraphs):
            where = f"{path}: article {a} paragraph {p}"
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if not isinstance(context, str) or not isinstance(paragraph.get("qas"), list):
                raise DataError(f"{where}: needs a 'context' string and a 'qas' list")
            cut = len(context) - len(context.lstrip())  # answer_start counts from the unstripped context
            context = context.strip()
            for qa in paragraph["qas"]:
                question, answers = qa.get("question"), qa.get("answers", [])
                if not isinstance(question, str) or not isinstance(answers, list):
                    raise DataError(f"{where}: question {qa.get('id')!r} needs a 'question' and an 'answers' list")
                texts, starts = [], []
                for answer in answers:
                    if not isinstance(answer, dict):
                        continue
                    raw = str(answer.get("text", ""))
                    text, given, start = raw.strip(), answer.get("answer_start"), None
                    if given is not None and text:
                        asked = _offset(given, f"{where}: question {qa.get('id')!r}") - cut \
                            + len(raw) - len(raw.lstrip())
                        start = _nearest(context, text, asked)
                        if start is None:
                            raise DataError(f"{where}: question {qa.get('id')!r}: the answer {text!r} "
                                            f"(answer_start {given!r}) is not in the context")
                        moved += int(start != asked)
                    texts.append(text)
                    starts.append(start if text else None)
                if qa.get("is_impossible"):
                    texts, starts = [""], []
                elif not texts:
                    raise DataError(f"{where}: question {qa.get('id')!r} has no answers and is not marked "
                                    f"is_impossible")
                examples.append(TaskExample({"context": context, "question": question.strip(), "title": title},
                                            texts[0], tuple(texts), str(qa.get("id", len(examples))),
                                            f"{where} question {qa.get('id')}", {"title": title}, tuple(starts)))
    if not examples:
        raise DataError(f"{path}: the file holds no questions")
    if moved and log:
        log(f"{path}: {moved:,} answer(s) not at their answer_start; the nearest occurrence of the text is used")
    return examples


def _offset(value, where: str) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{where}: answer_start must be a character offset (an integer), got {value!r}")
    return value


def _nearest(context: str, text: str, start: int) -> int | None:
    """``start`` if the context holds ``text`` there, else its occurrence nearest to ``start`` (None: absent)."""
    if start >= 0 and context.startswith(text, start):
        return start
    found, at = [], context.find(text)
    while at >= 0:
        found.append(at)
        at = context.find(text, at + 1)
    return min(found, key=lambda i: abs(i - start)) if found else None  # min keeps the earlier on a tie
