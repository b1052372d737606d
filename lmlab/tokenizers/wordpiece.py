"""A BERT-style WordPiece ``tokenizer.json`` for masked-LM pretraining on one's own text.

lmlab's own tokenizers (``char``, ``word``, ``bpe``) have an end token but no
mask token, which masked-LM training needs (:func:`lmlab.data.masking.special_ids`).
This trains the tokenizer BERT uses (Hugging Face ``tokenizers``: ``BertNormalizer``
with every CJK character its own token, ``BertPreTokenizer``, ``WordPiece`` with
``##`` continuations) with the special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]``
(ids 0-4). ``lmlab prepare --tokenizer FILE`` then uses it; its end token is
``[SEP]``, so documents are separated as in RoBERTa's full-sentence packing.

    python -m lmlab.tokenizers.wordpiece TEXT_FILE... --out tokenizer.json --vocab-size 8000
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable

from lmlab.core.errors import ConfigError
from lmlab.core.io import atomic_open, read_text

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_wordpiece(texts: Iterable[str], vocab_size: int = 8000, lowercase: bool = False,
                    min_freq: int = 2) -> str:
    """The ``tokenizer.json`` text of a WordPiece tokenizer trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if vocab_size <= len(SPECIALS):
        raise ConfigError(f"vocab_size {vocab_size} is too small: the special tokens alone take {len(SPECIALS)}")
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=lowercase, lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_freq, special_tokens=list(SPECIALS),
                                        show_progress=False)
    backend.train_from_iterator(texts, trainer=trainer)
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(  # what transformers adds; lmlab encodes without it
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return backend.to_str()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="UTF-8 text files")
    parser.add_argument("--out", required=True, help="tokenizer.json to write")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--lowercase", action="store_true")
    parser.add_argument("--max-chars", type=int, default=50_000_000, help="read at most this much text per file")
    args = parser.parse_args(argv)
    texts = [read_text(Path(f), "text file")[: args.max_chars] for f in args.files]
    lines = (line for text in texts for line in text.splitlines() if line.strip())
    with atomic_open(args.out, "w", encoding="utf-8") as handle:
        handle.write(train_wordpiece(lines, args.vocab_size, args.lowercase))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
