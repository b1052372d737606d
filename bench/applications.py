"""Applications on the shared data, at small scale on a CPU: what docs/results/applications.md reports.

    python bench/applications.py                        # every stage in order (about an hour on 2 cores)
    python bench/applications.py --stages pretrain,classify,small
    python bench/applications.py --stages summary       # only rewrite the tables from what was measured
    python bench/applications.py --stages pretrain,lora,summary --pretrain-langs en   # LoRA beside full FT

Stages (each skips what an earlier run already finished, so an interrupted run resumes):

- ``pretrain``: two small Transformers pre-trained in lmlab for a few minutes each: English
  (byte-level BPE 4,096 on WikiText-2 train) and Chinese (characters, on the training parts of
  LCSTS and Tatoeba cmn-eng, both sides, so the English letters are in the vocabulary too).
- ``classify``: SST-2 (the first 20,000 training sentences, and all 67,349; GLUE dev as the test set) and
  ChnSentiCorp (its 9,600 training reviews; its dev set as the test set), one epoch of full
  fine-tuning, beside TF-IDF + logistic regression on the same data (scikit-learn,
  ``pip install -e .[bench]``).
- ``lora``: SST-2 (the same 19,000 sentences, validation part and GLUE dev test set as ``classify``)
  fine-tuned on the same English pre-trained run with LoRA rank 8 on q, v (the language model
  frozen; the adapters and the classification head train), with the full fine-tune's batch,
  steps and schedule, at two peak learning rates (the full fine-tune's 5e-4 and ten times it:
  LoRA's few parameters usually want a larger one), the one kept chosen on validation accuracy;
  beside full fine-tuning (``classify``'s ``sst2-full`` folder, reused if already fine-tuned in
  this ``--work``, else fine-tuned here). Accuracy, macro-F1, trainable parameters and seconds
  go to ``results.json`` under ``sst2_lora``.
- ``small``: 500 training examples with and without EDA augmentation (sr, ri, rs, rd at 0.1,
  4 copies; WordNet for English, Cilin for Chinese), 3 seeds, both models.
- ``lcsts``: summarisation fine-tuning on the first 6,000 pairs of LCSTS PART_II (its last 1,000
  are held out); ROUGE on 300 of the held-out pairs.
- ``squad``: QA fine-tuning on the first 4,000 questions of the SQuAD v1.1 dev articles but the
  last 8 (no training set is available here); EM/F1 on 300 questions of those 8 articles (38
  drawn at random from each, the first 300 of them scored).
- ``translate``: English -> Chinese on Tatoeba cmn-eng: 1,000 English sentences (with all their
  translations) held out, 10,000 of the other pairs for training; BLEU (sacrebleu, zh
  tokenizer) on 300 held-out sentences, greedy and with 4 beams.
- ``summary``: tables (markdown) from ``results.json``.

Everything is written under ``--work`` (default ``runs/applications``): split files, runs,
fine-tuned folders, ``results.json`` and ``summary.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("LMLAB_DATA", REPO.parent / "shared" / "data"))
STAGES = ("pretrain", "classify", "lora", "small", "lcsts", "squad", "translate", "summary")
SEEDS = (0, 1, 2)
EDA = "sr=0.1,ri=0.1,rs=0.1,rd=0.1"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Results:
    """results.json, rewritten after every figure."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def __contains__(self, key):
        return key in self.data

    def __getitem__(self, key):
        return self.data[key]

    def put(self, key, value):
        from lmlab.core.io import write_json

        self.data[key] = value
        write_json(self.path, self.data)
        log(f"{key}: {json.dumps(value, ensure_ascii=False)[:300]}")


# ---------------------------------------------------------------- data splits


def write_lines(path: Path, lines) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def splits(work: Path) -> dict:
    """Split files made once from the shared data; the same for every stage and run."""
    folder = work / "splits"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "lcsts_train": folder / "lcsts-train.src.txt", "lcsts_test": folder / "lcsts-test.src.txt",
        "squad_train": folder / "squad-train.json", "squad_test": folder / "squad-test.json",
        "cmn_train": folder / "cmn-train.txt", "cmn_test": folder / "cmn-test.txt",
        "sst2_train": folder / "sst2-train-20k.tsv", "zh_corpus": folder / "zh-pretrain.txt",
    }
    if all(p.exists() for p in paths.values()):
        return paths
    # LCSTS: the last 1,000 pairs are the test set.
    src = (DATA / "summarization/lcsts/test.src.txt").read_text(encoding="utf-8").splitlines()
    tgt = (DATA / "summarization/lcsts/test.tgt.txt").read_text(encoding="utf-8").splitlines()
    write_lines(paths["lcsts_train"], src[:-1000])
    write_lines(folder / "lcsts-train.tgt.txt", tgt[:-1000])
    write_lines(paths["lcsts_test"], src[-1000:])
    write_lines(folder / "lcsts-test.tgt.txt", tgt[-1000:])
    # SQuAD v1.1 dev: the last 8 articles are the test set (no context is shared across the split), of which
    # 38 random questions per article are kept, so that scoring 300 spreads over all 8.
    squad = json.loads((DATA / "squad/dev-v1.1.json").read_text(encoding="utf-8"))
    paths["squad_train"].write_text(json.dumps({"version": "1.1", "data": squad["data"][:-8]}), encoding="utf-8")
    test_articles = []
    for a, article in enumerate(squad["data"][-8:]):
        places = [(p, q) for p, paragraph in enumerate(article["paragraphs"]) for q in range(len(paragraph["qas"]))]
        keep = set(random.Random(a).sample(places, 38))
        paragraphs = [{"context": paragraph["context"],
                       "qas": [qa for q, qa in enumerate(paragraph["qas"]) if (p, q) in keep]}
                      for p, paragraph in enumerate(article["paragraphs"])]
        test_articles.append({"title": article["title"], "paragraphs": [p for p in paragraphs if p["qas"]]})
    paths["squad_test"].write_text(json.dumps({"version": "1.1", "data": test_articles}), encoding="utf-8")
    # Tatoeba cmn-eng: 1,000 English sentences (all their translations) held out, chosen at random.
    pairs = [line.split("\t")[:2] for line in (DATA / "translation-cmn-eng/cmn.txt").read_text(
        encoding="utf-8").splitlines() if line.strip()]
    sources = sorted({en for en, _ in pairs})
    held = set(random.Random(0).sample(sources, 1000))
    train_pairs = [f"{en}\t{zh}" for en, zh in pairs if en not in held]
    random.Random(1).shuffle(train_pairs)  # the file is sorted by length: a prefix would be the shortest sentences
    write_lines(paths["cmn_train"], train_pairs)
    test_pairs = [f"{en}\t{zh}" for en, zh in pairs if en in held]
    random.Random(2).shuffle(test_pairs)  # scoring the first 300 sentences must not mean the 300 shortest
    write_lines(paths["cmn_test"], test_pairs)
    # SST-2: the first 20,000 training sentences (one epoch over them takes a few minutes here).
    sst = (DATA / "sst2/train.tsv").read_text(encoding="utf-8").splitlines()
    write_lines(paths["sst2_train"], sst[:20_001])
    # Chinese pre-training text: the training parts of LCSTS (texts and summaries) and cmn-eng (both sides).
    corpus = src[:-1000] + tgt[:-1000] + [s for pair in pairs if pair[0] not in held for s in pair]
    write_lines(paths["zh_corpus"], corpus)
    return paths


# ---------------------------------------------------------------- pre-training


PRETRAIN_MODEL = {"n_layer": 4, "n_head": 4, "d_model": 128, "block_size": 256, "dropout": 0.0}


def pretrain(work: Path, results: Results, paths: dict, minutes: float, langs=("en", "zh")) -> None:
    from lmlab.data.prepare import prepare
    from lmlab.training.config import TrainConfig
    from lmlab.training.trainer import train

    corpora = {
        "en": (["train=" + str(DATA / "wikitext-2/train.txt"), "valid=" + str(DATA / "wikitext-2/valid.txt"),
                "test=" + str(DATA / "wikitext-2/test.txt")],
               dict(tokenizer="bpe", vocab_size=4096)),
        "zh": ([str(paths["zh_corpus"])], dict(tokenizer="char", min_freq=2, read={"doc_sep": "line"},
                                               split=(0.98, 0.02, 0.0), unit="document")),
    }
    for lang, (sources, options) in corpora.items():
        if lang not in langs:
            continue
        data, run = work / f"data-{lang}", work / f"pretrain-{lang}"
        if not (data / "manifest.json").exists():
            log(f"prepare {lang}: {sources}")
            prepare(sources, data, workers=1, log=log, **options)
        if f"pretrain_{lang}" in results:
            continue
        log(f"pre-train {lang} for at most {minutes} minutes -> {run}")
        config = TrainConfig(data=str(data), shape="shakespeare-char", model=PRETRAIN_MODEL, batch_size=8,
                             max_steps=600, learning_rate=1e-3, min_learning_rate=1e-4, warmup_steps=50,
                             eval_interval=100, eval_batches=10, max_seconds=minutes * 60, seed=0)
        result = train(config, run, resume=(run / "config.json").exists(), log=log)
        manifest = json.loads((data / "manifest.json").read_text())
        results.put(f"pretrain_{lang}", {**result, "vocab_size": manifest["tokenizer"]["vocab_size"],
                                         "train_tokens": manifest["splits"]["train"]["tokens"]})


# ---------------------------------------------------------------- classification


def tfidf_baseline(train, valid, test, lang: str) -> dict:
    """TF-IDF (words 1-2 for English, characters 1-3 for Chinese) + logistic regression, C chosen on valid."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from lmlab.tasks.metrics.classification import classification_metrics

    labels = sorted({e.label for e in train})
    if lang == "zh":
        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=1)
    else:
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, token_pattern=r"(?u)\b\w+\b|'\w+")
    x_train = vectorizer.fit_transform([e.text for e in train])
    y_train = [labels.index(e.label) for e in train]
    best = None
    for c in (0.3, 1.0, 3.0, 10.0):
        model = LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train)
        accuracy = model.score(vectorizer.transform([e.text for e in valid]), [labels.index(e.label) for e in valid])
        if best is None or accuracy > best[0]:
            best = (accuracy, c, model)
    predicted = best[2].predict(vectorizer.transform([e.text for e in test]))
    metrics = classification_metrics([labels.index(e.label) for e in test], predicted, labels)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "C": best[1],
            "train_examples": len(train)}


def finetune_classifier(work: Path, name: str, run: Path, train, valid, test, **settings) -> dict:
    from lmlab.tasks.config import FinetuneConfig
    from lmlab.tasks.evaluate import evaluate_task
    from lmlab.tasks.finetune import finetune

    out = work / "finetuned" / name
    options = {"cilin": str(DATA / "cilin/cilin_ex.utf8.txt")}
    if not (out / "results.json").exists():
        finetune(run, out, train, valid, FinetuneConfig(task="classify", **settings), options, overwrite=True, log=log)
    fitted = json.loads((out / "results.json").read_text())
    metrics = evaluate_task(out, test, out=out / "test-metrics.json")
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "val_accuracy": fitted["val_accuracy"],
            "steps": fitted["steps"], "fine_tune_seconds": fitted["seconds"], "test_examples": metrics["examples"]}


CLASSIFICATION = {
    # name: (language, training file (a split key or a path), test file, extra fine-tuning settings)
    "sst2": ("en", "sst2_train", DATA / "sst2/dev.tsv", {}),
    "chnsenticorp": ("zh", DATA / "chnsenticorp/train.tsv", DATA / "chnsenticorp/dev.tsv", {"max_length": 128}),
}
# SST-2 on all its 67,349 training sentences too (the 500-example draws above come from the first 20,000).
FULL_SST2 = ("en", DATA / "sst2/train.tsv", DATA / "sst2/dev.tsv", {"eval_interval": 500})


# The full fine-tunes' settings (the ``extra`` of each data set on top).
FULL_FINETUNE = {"epochs": 1, "batch_size": 32, "learning_rate": 5e-4, "eval_interval": 200}


def classification_split(work: Path, paths: dict, name: str, train_file):
    """``name``'s training file less 5% held out for validation (drawn with seed 0): (kept, valid, their files)."""
    from lmlab.tasks.readers.examples import split_off
    from lmlab.tasks.readers.labelled import read_labelled

    train_path = paths[train_file] if isinstance(train_file, str) else train_file
    kept, valid = split_off(list(read_labelled(train_path)), 0.05, 0, str(train_path))
    files = work / "splits"
    return (kept, valid, write_examples(files / f"{name}-full-train.tsv", kept),
            write_examples(files / f"{name}-full-valid.tsv", valid))


def classify(work: Path, results: Results, paths: dict) -> None:
    from lmlab.tasks.readers.labelled import read_labelled

    for name, (lang, train_file, test_file, extra) in {**CLASSIFICATION, "sst2all": FULL_SST2}.items():
        kept, valid, train_out, valid_out = classification_split(work, paths, name, train_file)
        test = read_labelled(test_file)
        if f"{name}_tfidf" not in results:
            results.put(f"{name}_tfidf", tfidf_baseline(kept, valid, test, lang))
        if f"{name}_lm" not in results:
            results.put(f"{name}_lm", finetune_classifier(
                work, f"{name}-full", work / f"pretrain-{lang}", train_out, valid_out, test_file,
                **{**FULL_FINETUNE, **extra}))


# LoRA on SST-2: rank 8 on q, v (the LoRA paper's and lmlab's default targets); two peak learning rates, the
# full fine-tune's and ten times it, the one with the better validation accuracy kept (the test set chooses nothing).
LORA = {"lora_rank": 8, "lora_targets": "q,v"}
LORA_LEARNING_RATES = (5e-4, 5e-3)


def folder_facts(work: Path, name: str) -> dict:
    """Trainable and total parameters of a fine-tuned folder, and its LoRA record (None without)."""
    config = json.loads((work / "finetuned" / name / "config.json").read_text())
    return {"trainable_parameters": config["parameters"]["trainable"], "parameters": config["parameters"]["total"],
            "base_step": config["base"]["step"], "lora": config.get("lora")}


def lora_stage(work: Path, results: Results, paths: dict) -> None:
    """SST-2 with LoRA beside full fine-tuning, both on ``pretrain-en``; everything under ``sst2_lora``."""
    lang, train_file, test_file, extra = CLASSIFICATION["sst2"]
    run = work / f"pretrain-{lang}"
    if not (run / "config.json").exists():
        raise SystemExit(f"{run}: no English pre-trained run here; run the pretrain stage first")
    _, _, train_out, valid_out = classification_split(work, paths, "sst2", train_file)
    record = dict(results["sst2_lora"]) if "sst2_lora" in results else {}
    record.setdefault("date", time.strftime("%Y-%m-%d"))
    record.setdefault("pretrain", {k: results.data.get(f"pretrain_{lang}", {}).get(k)
                                   for k in ("step", "val_loss", "best_val_loss")})
    if "full" not in record:
        started, load = time.perf_counter(), os.getloadavg()[0]
        if "sst2_lm" in results and (work / "finetuned" / "sst2-full" / "results.json").exists():
            full, wall = dict(results["sst2_lm"]), None  # the classify stage's, on the same run in this --work
        else:
            full = finetune_classifier(work, "sst2-full", run, train_out, valid_out, test_file,
                                       **{**FULL_FINETUNE, **extra})
            results.put("sst2_lm", full)
            wall = round(time.perf_counter() - started, 1)
        record["full"] = {**full, **folder_facts(work, "sst2-full"), "learning_rate": FULL_FINETUNE["learning_rate"],
                          "wall_seconds": wall, "load_average_at_start": round(load, 2)}
        results.put("sst2_lora", record)
    for lr in LORA_LEARNING_RATES:
        key = f"lr_{lr:g}"
        if key in record.get("lora", {}):
            continue
        name = f"sst2-lora-r{LORA['lora_rank']}-lr{lr:g}"
        started, load = time.perf_counter(), os.getloadavg()[0]
        metrics = finetune_classifier(work, name, run, train_out, valid_out, test_file,
                                      **{**FULL_FINETUNE, **extra, **LORA, "learning_rate": lr})
        record.setdefault("lora", {})[key] = {**metrics, **folder_facts(work, name), "learning_rate": lr,
                                              "wall_seconds": round(time.perf_counter() - started, 1),
                                              "load_average_at_start": round(load, 2)}
        results.put("sst2_lora", record)
    runs = record["lora"]
    chosen = max(runs, key=lambda k: runs[k]["val_accuracy"])  # validation chooses; ties go to the first
    if record.get("chosen") != chosen:
        record["chosen"] = chosen
        results.put("sst2_lora", record)


def write_examples(path: Path, examples) -> Path:
    write_lines(path, ["sentence\tlabel"] + [f"{' '.join(e.text.split())}\t{e.label}" for e in examples])
    return path


def small(work: Path, results: Results) -> None:
    """500 training examples (and 200 for validation) drawn from the training set, with and without EDA."""
    from lmlab.tasks.augment import Augmenter, augment_examples, parse_operations, synonym_sources
    from lmlab.tasks.readers.labelled import read_labelled

    sources = synonym_sources(cilin=str(DATA / "cilin/cilin_ex.utf8.txt"))
    for name, (lang, train_file, test_file, extra) in CLASSIFICATION.items():
        examples = read_labelled(work / "splits" / f"{name}-full-train.tsv")
        test = read_labelled(test_file)
        for seed in SEEDS:
            order = np.random.default_rng(100 + seed).permutation(len(examples))
            train = [examples[i] for i in order[:500]]
            valid = [examples[i] for i in order[500:700]]
            train_path = write_examples(work / "splits" / f"{name}-500-s{seed}.tsv", train)
            valid_path = write_examples(work / "splits" / f"{name}-500-valid-s{seed}.tsv", valid)
            augmenter = Augmenter(parse_operations(EDA), copies=4, seed=seed, lang=lang, synonyms=sources)
            augmented = augment_examples(train, augmenter)[0]
            for aug in (False, True):
                key = f"{name}_500_s{seed}_{'eda' if aug else 'plain'}"
                if f"{key}_tfidf" not in results:
                    results.put(f"{key}_tfidf", tfidf_baseline(augmented if aug else train, valid, test, lang))
                if f"{key}_lm" not in results:
                    settings = dict(max_steps=300, batch_size=32, learning_rate=5e-4, eval_interval=50, seed=seed,
                                    **extra)
                    if aug:
                        settings.update(augment=EDA, augment_copies=4, lang=lang)
                    results.put(f"{key}_lm", finetune_classifier(
                        work, f"{name}-500-s{seed}-{'eda' if aug else 'plain'}", work / f"pretrain-{lang}",
                        train_path, valid_path, test_file, **settings))


# ---------------------------------------------------------------- generation


def generation(work: Path, results: Results, key: str, run: Path, train: Path, test: Path, template: str,
               settings: dict, limit: int, test_examples: int = 300, decode=None) -> None:
    from lmlab.tasks.config import FinetuneConfig
    from lmlab.generate.search import DecodeConfig
    from lmlab.tasks.evaluate import evaluate_task
    from lmlab.tasks.finetune import finetune

    out = work / "finetuned" / key
    if not (out / "results.json").exists():
        finetune(run, out, train, None, FinetuneConfig(task="generate", template=template, **settings),
                 {"limit": limit}, overwrite=True, log=log)
    fitted = json.loads((out / "results.json").read_text())
    for strategy in decode or ("greedy",):
        name = f"{key}_{strategy}"
        if name in results:
            continue
        config = DecodeConfig("beam", beam_size=4) if strategy == "beam" else DecodeConfig(strategy)
        metrics = evaluate_task(out, test, decode=config, limit=test_examples, out=out / f"test-{strategy}.json",
                                predictions=out / f"predictions-{strategy}.jsonl")
        keep = {k: v for k, v in metrics.items() if k in ("examples", "rouge1", "rouge2", "rougeL", "rougeLsum",
                                                          "bleu", "bleu_signature", "exact_match", "f1",
                                                          "prompts_cut", "seconds", "lang")}
        results.put(name, {**keep, "val_loss": fitted["val_loss"], "steps": fitted["steps"],
                           "fine_tune_seconds": fitted["seconds"], "train_examples": limit})


def lead_baseline(work: Path, results: Results, paths: dict, test_examples: int = 300) -> None:
    """LCSTS's lead baseline: the first N characters of the text, N the mean training summary length."""
    from lmlab.tasks.metrics import generation_metrics
    from lmlab.tasks.readers.pairs import read_task_examples

    if "lcsts_lead" in results:
        return
    train = read_task_examples(paths["lcsts_train"])
    n = round(sum(len(e.target) for e in train) / len(train))
    test = read_task_examples(paths["lcsts_test"])[:test_examples]
    scores = generation_metrics(("rouge",), [e.fields["source"][:n] for e in test], [e.references for e in test], "zh")
    results.put("lcsts_lead", {**scores, "characters": n, "examples": len(test)})


# ---------------------------------------------------------------- summary


def mean_spread(values):
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def summary(work: Path, results: Results) -> str:
    r = results.data
    lines = ["## Classification (test: SST-2 GLUE dev, ChnSentiCorp dev)", "",
             "| data | training examples | model | accuracy % | macro-F1 % |", "|---|---:|---|---:|---:|"]
    for name, label in (("sst2", "SST-2"), ("sst2all", "SST-2"), ("chnsenticorp", "ChnSentiCorp")):
        if f"{name}_tfidf" in r:
            t = r[f"{name}_tfidf"]
            lines.append(f"| {label} | {t['train_examples']:,} | TF-IDF + logistic regression | {t['accuracy']:.1f} | "
                         f"{t['macro_f1']:.1f} |")
        if f"{name}_lm" in r:
            m = r[f"{name}_lm"]
            n = r.get(f"{name}_tfidf", {}).get("train_examples")  # the lora stage fine-tunes without the baseline
            lines.append(f"| {label} | {f'{n:,}' if n else '—'} | lmlab Transformer, fine-tuned | "
                         f"{m['accuracy']:.1f} | {m['macro_f1']:.1f} |")
    if "sst2_lora" in r and "full" in r["sst2_lora"]:
        lora = r["sst2_lora"]
        p = lora.get("pretrain", {})
        lines += ["", "## SST-2: LoRA beside full fine-tuning "
                  f"(the same English pre-trained run: {p.get('step')} steps, "
                  f"validation loss {p.get('val_loss') or p.get('best_val_loss') or float('nan'):.2f})", "",
                  "| mode | peak lr | trainable parameters | steps | validation accuracy % | test accuracy % | "
                  "macro-F1 % | fine-tuning minutes |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        rows = [("full fine-tuning", lora["full"])] + [
            (f"LoRA rank {m['lora']['rank']} on {','.join(m['lora']['targets'])}"
             + (" (chosen on validation)" if k == lora.get("chosen") else ""), m)
            for k, m in lora.get("lora", {}).items()]
        for label, m in rows:
            share = m["trainable_parameters"] / m["parameters"] * 100
            lines.append(f"| {label} | {m['learning_rate']:g} | {m['trainable_parameters']:,} ({share:.2f}%) | "
                         f"{m['steps']} | {m['val_accuracy']:.1f} | "
                         f"{m['accuracy']:.1f} | {m['macro_f1']:.1f} | {m['fine_tune_seconds'] / 60:.1f} |")
    lines += ["", "## 500 training examples, with and without EDA augmentation (mean ± standard deviation, 3 seeds)",
              "", "| data | model | without augmentation | with EDA (4 copies) |", "|---|---|---:|---:|"]
    for name, label in (("sst2", "SST-2"), ("chnsenticorp", "ChnSentiCorp")):
        for model, model_label in (("tfidf", "TF-IDF + logistic regression"), ("lm", "lmlab Transformer")):
            cells = []
            for aug in ("plain", "eda"):
                values = [r[k]["accuracy"] for k in (f"{name}_500_s{s}_{aug}_{model}" for s in SEEDS) if k in r]
                cells.append(mean_spread(values) + ("" if len(values) == 3 else f" ({len(values)} seeds)")
                             if values else "—")
            lines.append(f"| {label} | {model_label} | {cells[0]} | {cells[1]} |")
    lines += ["", "## Conditional generation", "", "| task | decoding | examples | metrics |", "|---|---|---:|---|"]
    for key, label in (("lcsts", "LCSTS summarisation"), ("squad", "SQuAD v1.1 QA"), ("cmn", "cmn-eng en→zh")):
        for strategy in ("greedy", "beam"):
            m = r.get(f"{key}_{strategy}")
            if not m:
                continue
            if key == "lcsts":
                figures = f"ROUGE-1 {m['rouge1']:.1f}, ROUGE-2 {m['rouge2']:.1f}, ROUGE-L {m['rougeL']:.1f} (characters)"
                if "lcsts_lead" in r:
                    lead = r["lcsts_lead"]
                    figures += (f"; lead-{lead['characters']} baseline: {lead['rouge1']:.1f} / {lead['rouge2']:.1f} / "
                                f"{lead['rougeL']:.1f}")
            elif key == "squad":
                figures = f"EM {m['exact_match']:.1f}, F1 {m['f1']:.1f}"
            else:
                figures = f"BLEU {m['bleu']:.1f} (sacrebleu {m['bleu_signature'].replace('|', ', ')})"
            lines.append(f"| {label} | {strategy}{' (4 beams)' if strategy == 'beam' else ''} | {m['examples']} | "
                         f"{figures} |")
    text = "\n".join(lines) + "\n"
    (work / "summary.md").write_text(text, encoding="utf-8")
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, from {', '.join(STAGES)}")
    parser.add_argument("--work", default=str(REPO / "runs" / "applications"))
    parser.add_argument("--pretrain-minutes", type=float, default=8.0)
    parser.add_argument("--pretrain-langs", default="en,zh",
                        help="which models the pretrain stage trains: en, zh or en,zh (default)")
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = Results(work / "results.json")
    paths = splits(work)
    if "pretrain" in stages:
        langs = tuple(s.strip() for s in args.pretrain_langs.split(",") if s.strip())
        if not langs or set(langs) - {"en", "zh"}:
            parser.error(f"--pretrain-langs: expected en, zh or en,zh, got {args.pretrain_langs!r}")
        pretrain(work, results, paths, args.pretrain_minutes, langs)
    if "classify" in stages:
        classify(work, results, paths)
    if "lora" in stages:
        lora_stage(work, results, paths)
    if "small" in stages:
        small(work, results)
    if "lcsts" in stages:
        lead_baseline(work, results, paths)
        generation(work, results, "lcsts", work / "pretrain-zh", paths["lcsts_train"], paths["lcsts_test"], "summarize",
                   dict(epochs=1, batch_size=16, learning_rate=5e-4, eval_interval=150, max_new_tokens=30), 6000)
    if "squad" in stages:
        generation(work, results, "squad", work / "pretrain-en", paths["squad_train"], paths["squad_test"], "qa",
                   dict(epochs=1, batch_size=16, learning_rate=5e-4, eval_interval=100, max_new_tokens=24,
                        truncate_source=True), 4000)
    if "translate" in stages:
        generation(work, results, "cmn", work / "pretrain-zh", paths["cmn_train"], paths["cmn_test"], "translate",
                   dict(epochs=1, batch_size=32, learning_rate=5e-4, eval_interval=100, max_new_tokens=40), 10000,
                   decode=("greedy", "beam"))
    print(summary(work, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
