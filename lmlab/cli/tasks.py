"""The task subcommands of ``lmlab``: finetune, predict, evaluate-task, augment, lora-merge and lora-export.

:func:`add_commands` adds them to the main parser (:mod:`lmlab.cli`); each
command is a thin function over the Python API of :mod:`lmlab.tasks`.
"""

from __future__ import annotations

import json

from lmlab.cli.common import CHECKPOINT_HELP, log_unless_quiet, progress_on, run_output_options
from lmlab.core.errors import ConfigError


def _data_options(args) -> dict:
    options = {}
    for name in ("format", "text_column", "label_column", "target_field", "limit", "doc_sep", "wordnet", "cilin",
                 "neighbours"):
        value = getattr(args, name, None)
        if value not in (None, ""):
            options[name] = value
    if getattr(args, "swap", False):
        options["swap"] = True
    if getattr(args, "stop_words", None):
        from lmlab.tasks.augment.stopwords import read_stop_words

        options["stop_words"] = read_stop_words(args.stop_words)
    return options


def _decode_config(args):
    from lmlab.generate.search import DecodeConfig

    return DecodeConfig(args.decode, args.temperature, args.top_k, args.top_p, args.beam_size, args.length_penalty,
                        args.seed)


# ---------------------------------------------------------------- commands


def cmd_finetune(args) -> int:
    from lmlab.tasks.config import FinetuneConfig
    from lmlab.tasks.finetune import finetune

    if args.task == "generate" and args.augment:
        raise ConfigError("--augment applies to classification data (--task classify)")
    config = FinetuneConfig(
        task=args.task, pooling=args.pooling, freeze=args.freeze, class_weights=args.class_weights,
        max_length=args.max_length, doc_stride=args.doc_stride, max_answer_tokens=args.max_answer_tokens,
        template=args.template, truncate_source=args.truncate_source, max_new_tokens=args.max_new_tokens,
        augment=args.augment or "", augment_copies=args.augment_copies, valid_fraction=args.valid_fraction,
        lang=args.lang, epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
        learning_rate=args.lr, weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
        eval_interval=args.eval_interval, early_stopping=args.early_stopping, seed=args.seed,
        checkpoint_interval=args.checkpoint_interval, **_lora_settings(args))
    result = finetune(args.run, args.out, args.train, args.valid, config, _data_options(args), args.checkpoint,
                      args.overwrite, log=log_unless_quiet(args),
                      progress=progress_on(args), resume=args.resume)
    print(json.dumps(result))
    return 0


def _lora_settings(args) -> dict:
    if args.lora_rank is None:
        if args.lora_alpha is not None or args.lora_targets is not None:
            raise ConfigError("--lora-alpha and --lora-targets need --lora-rank")
        return {}
    if args.lora_rank < 1:
        raise ConfigError(f"--lora-rank must be >= 1, got {args.lora_rank} (leave it out to train every weight)")
    if args.lora_alpha is not None and args.lora_alpha <= 0:
        raise ConfigError(f"--lora-alpha must be > 0, got {args.lora_alpha:g}")
    settings = {"lora_rank": args.lora_rank, "lora_alpha": args.lora_alpha or 0.0}
    if args.lora_targets is not None:
        settings["lora_targets"] = args.lora_targets
    return settings


def cmd_lora_merge(args) -> int:
    from lmlab.tasks.folder import merge_lora

    result = merge_lora(args.folder, args.out, args.checkpoint)
    print(json.dumps(result))
    return 0


def cmd_lora_export(args) -> int:
    from lmlab.interop.peft import save_peft_adapter
    from lmlab.tasks.folder import is_lora, load_finetuned

    finetuned = load_finetuned(args.folder, args.checkpoint)
    if not is_lora(finetuned.config):
        raise ConfigError(f"{args.folder} was not fine-tuned with LoRA: export it whole with lmlab export")
    result = save_peft_adapter(finetuned.lm, args.out, args.base or finetuned.config["base"]["run"])
    if finetuned.task not in ("generate", "lm"):
        result["note"] = f"the {finetuned.task} head is not part of a PEFT adapter; it stays in {args.folder}"
    print(json.dumps(result))
    return 0


def cmd_predict(args) -> int:
    from lmlab.tasks.predict import predict

    rows = predict(args.folder, args.texts, args.file, _decode_config(args), args.max_new_tokens,
                   _data_options(args), args.checkpoint, progress=progress_on(args))
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    for row in rows:
        if "label" in row:
            print(f"{row['label']}\t{row['probabilities'][row['label']]:.3f}\t{row['text']}")
        else:
            print(row["completion"])
    return 0


def cmd_evaluate_task(args) -> int:
    from lmlab.tasks.evaluate import evaluate_task

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    options = _data_options(args)
    if args.lang != "auto":
        options["lang"] = args.lang
    result = evaluate_task(args.folder, args.test, args.task, _decode_config(args), args.max_new_tokens, metrics,
                           args.limit, args.out, args.predictions, options, args.checkpoint,
                           progress=progress_on(args))
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    shown = {k: v for k, v in result.items() if isinstance(v, (int, float)) and k != "step"}
    print(f"{result['test']} ({result['task']}): "
          + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()))
    print(f"metrics written to {result['metrics_file']}")
    return 0


def cmd_augment(args) -> int:
    from lmlab.tasks.augment.files import augment_file
    from lmlab.tasks.augment.operations import parse_operations

    options = _data_options(args)
    augmenter = {"operations": parse_operations(args.ops), "copies": args.copies, "seed": args.seed, "lang": args.lang,
                 "wordnet": options.get("wordnet"), "cilin": options.get("cilin"),
                 "neighbours": options.get("neighbours"), "stop_words": options.get("stop_words")}
    result = augment_file(args.input, args.output, augmenter, keep_original=not args.no_original,
                          format=options.get("format", "auto"), text_column=options.get("text_column"),
                          label_column=options.get("label_column"), progress=progress_on(args))
    made = ", ".join(f"{k} {v:,}" for k, v in result["copies"].items()) or "none"
    print(f"{args.input}: {result['rows_in']:,} rows -> {args.output}: {result['rows_out']:,} rows (copies: {made})")
    return 0


# ---------------------------------------------------------------- parsers


def _data_arguments(p, labels: bool = True, pairs: bool = True, limit: bool = True) -> None:
    g = p.add_argument_group("data files")
    g.add_argument("--format", default="auto", help="auto (default); labelled text: tsv, csv, jsonl, text (one a line; .txt); "
                   "generation: squad, tatoeba, lcsts, jsonl")
    if labels:
        g.add_argument("--text-column", help="text column name(s), or 0-based indices for a file without a header "
                       "(default: sentence, text_a, text, review, ...)")
        g.add_argument("--label-column", help="label column name or index (default: label, class, ...)")
    if pairs:
        g.add_argument("--swap", action="store_true", help="sentence pairs: translate the second column into the first")
        g.add_argument("--target-field", help="JSONL generation data: the field holding the target (default target)")
    if limit:
        g.add_argument("--limit", type=int, help="read only the first N examples")


def _synonym_arguments(p) -> None:
    g = p.add_argument_group("synonyms")
    g.add_argument("--wordnet", help="WordNet 3.0 database folder (default: LMLAB_WORDNET, $LMLAB_DATA/wordnet, NLTK data folders, /usr/share/wordnet)")
    g.add_argument("--cilin", help="Cilin synonym file for Chinese (or LMLAB_CILIN)")
    g.add_argument("--neighbours", metavar="RUN", help="use nearest neighbours in this run's embeddings instead")
    g.add_argument("--stop-words", help="file of stop words (one a line) replacing the built-in lists")


def _decode_arguments(p) -> None:
    g = p.add_argument_group("decoding (generation)")
    g.add_argument("--decode", default="greedy", help="greedy (default), sample or beam")
    g.add_argument("--beam-size", type=int, default=4)
    g.add_argument("--length-penalty", type=float, default=1.0, help="beam: score / length ** this (default 1)")
    g.add_argument("--temperature", type=float, default=1.0, help="sample: temperature (default 1)")
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-new-tokens", type=int, help="default: what fine-tuning chose (longest training target)")


def add_commands(commands) -> None:
    p = commands.add_parser(
        "finetune", help="fine-tune a run for classification, generation, extractive QA or continued pre-training",
        description="Fine-tune a pretrained run. classify: a head on the language model's pooled states; "
        "generate: prompt -> completion with the loss on the completion only; span: extractive QA with an encoder; "
        "lm: continued pre-training of a decoder on a plain-text file (next-token loss over windows of the "
        "context). The result is a new folder.")
    p.add_argument("run", help="the pretrained run folder")
    p.add_argument("--task", required=True, choices=("classify", "generate", "span", "lm"),
                   help="span: extractive QA (SQuAD format) with an encoder run; lm: continued pre-training on "
                   "UTF-8 plain text (a decoder run)")
    p.add_argument("--train", required=True, help="training file")
    p.add_argument("--valid", help="validation file (default: hold out --valid-fraction of the training file; "
                   "--task lm: its last documents)")
    p.add_argument("--out", required=True, help="folder for the fine-tuned model")
    p.add_argument("--checkpoint", default="best", help="base run checkpoint: " + CHECKPOINT_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace an existing fine-tuned folder")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted fine-tune in --out from its last checkpoint, with exactly the "
                   "losses and weights of an uninterrupted run; give the same arguments it was started with")
    p.add_argument("--quiet", action="store_true")
    _data_arguments(p)
    g = p.add_argument_group("classification")
    g.add_argument("--pooling", default="last", help="last (the end token's state, default), mean, or cls (the "
                   "first token: an encoder's [CLS])")
    g.add_argument("--freeze", action="store_true", help="train the head only, the language model stays fixed")
    g.add_argument("--class-weights", default="none", help="none (default), balanced, or weights like 1,3")
    g.add_argument("--max-length", type=int, default=0,
                   help="tokens per text, the end token included (default: the model's context)")
    g.add_argument("--augment", help="augment the training texts, e.g. sr=0.1,ri=0.1,rs=0.1,rd=0.1 (see lmlab augment)")
    g.add_argument("--augment-copies", type=int, default=4, help="new versions per training text (default 4)")
    g = p.add_argument_group("generation")
    g.add_argument("--template", default="summarize", help="summarize (default), qa, translate, or a template file")
    g.add_argument("--truncate-source", action="store_true",
                   help="cut an over-long source (or QA context) to fit the context instead of stopping")
    g.add_argument("--max-new-tokens", type=int, default=0, help="decoding budget (default: longest training target)")
    g = p.add_argument_group("continued pre-training (--task lm, decoder runs)")
    g.add_argument("--doc-sep", choices=("blank", "line", "file"),
                   help="documents of the text, as lmlab data prepare reads it: separated by blank lines (default), "
                   "one a line, or the whole file one; each is followed by the end token")
    g = p.add_argument_group("extractive QA (--task span, encoder runs)")
    g.add_argument("--doc-stride", type=int, default=0, help="tokens between context windows (default: half a window)")
    g.add_argument("--max-answer-tokens", type=int, default=30, help="longest answer span (default 30)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=float, default=3.0)
    g.add_argument("--max-steps", type=int, default=0, help="optimizer steps (default: from --epochs)")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default 3e-4)")
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--warmup-ratio", type=float, default=0.06)
    g.add_argument("--eval-interval", type=int, default=0, help="steps between validations (default: each epoch)")
    g.add_argument("--early-stopping", type=int, default=0, help="validations without improvement before stopping")
    g.add_argument("--checkpoint-interval", type=int, default=0,
                   help="steps between checkpoints --resume continues from (default: at every validation)")
    g.add_argument("--valid-fraction", type=float, default=0.1)
    g.add_argument("--lang", default="auto", help="auto (default), en or zh: metrics and augmentation")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("LoRA (low-rank adapters; the language model stays frozen)")
    g.add_argument("--lora-rank", type=int, help="train rank-R adapters on --lora-targets instead of every weight")
    g.add_argument("--lora-alpha", type=float, help="scaling alpha / rank of the adapters (default: the rank)")
    g.add_argument("--lora-targets", help="projections to adapt, from q,k,v,o (attention), fc,proj (GPT-2 and "
                   "encoder MLP), gate,up,down (Llama MLP), or all (default q,v)")
    _synonym_arguments(p)
    p.set_defaults(func=cmd_finetune)

    p = commands.add_parser("lora-merge", help="a LoRA fine-tuned folder as an ordinary one (adapters merged)",
                            description="Write W + (alpha/r)·A·B into every adapted kernel: the result needs no base "
                            "run, and lmlab generate, eval and export read it.")
    p.add_argument("folder", help="a folder lmlab finetune --lora-rank wrote")
    p.add_argument("--out", required=True, help="the new fine-tuned folder")
    p.add_argument("--checkpoint", default="best", help="best (default) or last")
    p.set_defaults(func=cmd_lora_merge)

    p = commands.add_parser("lora-export", help="a LoRA fine-tuned folder's adapters in PEFT's format",
                            description="Write adapter_config.json and adapter_model.safetensors, for "
                            "peft.PeftModel.from_pretrained on the base run exported with lmlab export --format hf.")
    p.add_argument("folder", help="a folder lmlab finetune --lora-rank wrote")
    p.add_argument("--out", required=True, help="the adapter folder")
    p.add_argument("--base", help="base_model_name_or_path written to the config (default: the base run)")
    p.add_argument("--checkpoint", default="best", help="best (default) or last")
    p.set_defaults(func=cmd_lora_export)

    p = commands.add_parser("predict", help="labels or completions from a fine-tuned folder (--task lm: "
                            "continuations of each text)")
    p.add_argument("folder")
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--file", help="read inputs from a file (any format finetune reads)")
    run_output_options(p, quiet=True)
    _data_arguments(p, labels=True, pairs=True)
    _decode_arguments(p)
    p.set_defaults(func=cmd_predict)

    p = commands.add_parser("evaluate-task", help="score a fine-tuned folder on a test file; writes metrics JSON")
    p.add_argument("folder")
    p.add_argument("--test", required=True, help="test file (--task lm: plain text; loss, perplexity, bits per byte)")
    p.add_argument("--task", choices=("classify", "generate", "span", "lm"), help="check the folder's task")
    p.add_argument("--metrics", help="generation metrics: rouge, rouge-stemmed, bleu, squad (default: the template's)")
    p.add_argument("--lang", default="auto", help="language of the references (default: as fine-tuned)")
    p.add_argument("--out", help="metrics JSON (default DIR/metrics-TESTNAME.json)")
    p.add_argument("--predictions", help="also write every prediction to this JSONL file")
    run_output_options(p, json="print the metrics as JSON", quiet=True)
    _data_arguments(p)
    _decode_arguments(p)
    p.set_defaults(func=cmd_evaluate_task)

    p = commands.add_parser("augment", help="augment a labelled text file (synonyms, insertion, swap, deletion)",
                            description="EDA-style augmentation; labels are copied unchanged. Operations: sr synonym "
                            "replacement, ri random insertion, rs random swap, rd random deletion, rv random "
                            "vocabulary replacement, each with a rate, e.g. sr=0.1,rd=0.2.")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT", help="output file: .jsonl, .csv or TSV")
    p.add_argument("--ops", default="sr=0.1,ri=0.1,rs=0.1,rd=0.1", help="operations and rates (default: EDA's four at 0.1)")
    p.add_argument("--copies", type=int, default=4, help="new versions per text (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lang", default="auto", help="auto (default, per text), en or zh")
    p.add_argument("--no-original", action="store_true", help="write only the new versions")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _data_arguments(p, pairs=False, limit=False)
    _synonym_arguments(p)
    p.set_defaults(func=cmd_augment)
