"""SQuAD v1.1 / v2.0 JSON (and Chinese sets in the same layout, such as CMRC 2018 and DRCD).

Each question becomes a :class:`TaskExample` with fields ``context``,
``question`` and ``title``; its references are the annotators' answer texts
(duplicates kept, as the official script keeps them) and its target is the
first. A v2.0 question marked ``is_impossible`` has the empty answer as its
only reference: the official v2.0 script scores an empty prediction as
"no answer".
"""

from __future__ import annotations

from pathlib import Path

from lmlab.errors import DataError
from lmlab.io import read_json
from lmlab.tasks.examples import TaskExample


def read_squad(path) -> list[TaskExample]:
    path = Path(path)
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
            for qa in paragraph["qas"]:
                question, answers = qa.get("question"), qa.get("answers", [])
                if not isinstance(question, str) or not isinstance(answers, list):
                    raise DataError(f"{where}: question {qa.get('id')!r} needs a 'question' and an 'answers' list")
                texts = tuple(str(answer.get("text", "")).strip() for answer in answers if isinstance(answer, dict))
                if qa.get("is_impossible"):
                    texts = ("",)
                elif not texts:
                    raise DataError(f"{where}: question {qa.get('id')!r} has no answers and is not marked "
                                    f"is_impossible")
                examples.append(TaskExample({"context": context.strip(), "question": question.strip(), "title": title},
                                            texts[0], texts, str(qa.get("id", len(examples))),
                                            f"{where} question {qa.get('id')}", {"title": title}))
    if not examples:
        raise DataError(f"{path}: the file holds no questions")
    return examples


def articles(examples: list[TaskExample]) -> list[str]:
    """Article titles in file order (for splitting by article, so no context is shared across splits)."""
    return list(dict.fromkeys(e.extra.get("title", "") for e in examples))
