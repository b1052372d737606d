"""lmlab tokenizers ↔ Hugging Face ``tokenizer.json`` and its companion files.

Export writes a ``tokenizer.json`` that encodes exactly as the lmlab tokenizer:

- ``bpe`` and ``hf`` tokenizers already are a ``tokenizer.json``: written as is;
- ``char``: a ``WordLevel`` model over the characters, a pre-tokenizer that
  isolates every code point, ``<unk>`` for the rest, and a ``Fuse`` decoder;
- ``word`` (whitespace): a ``WordLevel`` model after ``WhitespaceSplit``, which
  splits where Rust's ``char::is_whitespace`` does; Python's ``str.split`` also
  splits at U+001C..U+001F, so a normaliser turns those into spaces first;
- ``word`` with jieba cannot be written: jieba's segmentation is a dictionary
  and an HMM that ``tokenizers`` has no component for (an error says so).

Special tokens are added as ``tokenizer.json`` special tokens, so in Hugging
Face a text that literally contains ``<eos>`` encodes it as the end token,
where lmlab's character tokenizer spells it out.

Import reads ``tokenizer.json`` and takes the end token from
``tokenizer_config.json``, else from ``config.json``'s ``eos_token_id``. A chat template
(``chat_template`` in ``tokenizer_config.json``, or ``chat_template.jinja`` as ``transformers`` 5
saves it) is kept with the imported ``tokenizer_config.json`` and written back on export.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmlab.core.errors import ConfigError
from lmlab.core.io import read_json, read_text
from lmlab.tokenizers import CharTokenizer, HFTokenizer, Tokenizer, WordTokenizer, load_tokenizer
from lmlab.tokenizers.specials import CLS_TOKENS, MASK_TOKENS, PAD_TOKENS, SEP_TOKENS

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers 5 saves a tokenizer's chat template
SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")
PYTHON_ONLY_SPACES = "[\x1c-\x1f]"  # str.split() splits here; char::is_whitespace does not


def _vocabulary_json(tokenizer, pre_tokenizer, decoder, normalizer=None) -> str:
    from tokenizers import AddedToken, models
    from tokenizers import Tokenizer as Backend

    backend = Backend(models.WordLevel({token: i for i, token in enumerate(tokenizer.vocab)},
                                       unk_token=tokenizer.id_to_token(tokenizer.unk_id)))
    if normalizer is not None:
        backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    if decoder is not None:
        backend.decoder = decoder
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False)
                                for token in sorted(tokenizer.special_tokens, key=tokenizer.special_tokens.get)])
    return backend.to_str()


def tokenizer_json(tokenizer: Tokenizer) -> str:
    """A Hugging Face ``tokenizer.json`` that encodes as ``tokenizer`` does; ConfigError if none can."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers

    if isinstance(tokenizer, HFTokenizer):
        return tokenizer.hf_json()
    if isinstance(tokenizer, CharTokenizer):
        return _vocabulary_json(tokenizer, pre_tokenizers.Split(Regex(r"[\s\S]"), "isolated"), decoders.Fuse())
    if isinstance(tokenizer, WordTokenizer):
        if tokenizer.segmenter != "whitespace":
            raise ConfigError(f"a {tokenizer.segmenter} word tokenizer has no tokenizer.json equivalent (Hugging "
                              "Face tokenizers has no dictionary-and-HMM segmenter); export with --no-tokenizer, "
                              "or train on char or bpe tokens to share the tokenizer")
        return _vocabulary_json(tokenizer, pre_tokenizers.WhitespaceSplit(), None,
                                normalizers.Replace(Regex(PYTHON_ONLY_SPACES), " "))
    raise ConfigError(f"cannot export a {tokenizer.kind} tokenizer to tokenizer.json")


def token_text(value) -> str | None:
    """A special token as ``tokenizer_config.json`` spells it: a string or an AddedToken object."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def special_tokens(tokenizer: Tokenizer, imported: dict | None = None) -> dict[str, str]:
    """``bos/eos/unk/pad_token`` for the Hugging Face files.

    An imported tokenizer keeps the ones its ``tokenizer_config.json`` named;
    lmlab's own have no beginning token, so the end token doubles as one (as GPT-2's does).
    """
    specials = {name: token_text((imported or {}).get(name)) for name in SPECIAL_NAMES}
    specials = {name: token for name, token in specials.items() if token is not None}
    specials["eos_token"] = tokenizer.eos_token
    specials.setdefault("bos_token", tokenizer.eos_token)
    if tokenizer.unk_id is not None:
        specials.setdefault("unk_token", tokenizer.id_to_token(tokenizer.unk_id))

    for name, candidates in (("mask_token", MASK_TOKENS), ("cls_token", CLS_TOKENS), ("sep_token", SEP_TOKENS),
                             ("pad_token", PAD_TOKENS)):  # a masked LM's, so fill-mask pipelines find them
        found = next((token for token in candidates if token in tokenizer.special_tokens), None)
        if found is not None:
            specials.setdefault(name, found)
    return specials


def token_ids(backend_json: str, specials: dict[str, str]) -> dict[str, int | None]:
    """``bos_token_id``, ``eos_token_id``, ``pad_token_id`` for config.json and generation_config.json."""
    from tokenizers import Tokenizer as Backend

    backend = Backend.from_str(backend_json)
    return {f"{name}_token_id": backend.token_to_id(specials[f"{name}_token"]) if f"{name}_token" in specials
            else None for name in ("bos", "eos", "pad")}


def tokenizer_config(specials: dict[str, str], block_size: int, imported: dict | None = None) -> dict:
    """``tokenizer_config.json``: an imported one is kept; ours loads ``tokenizer.json`` as it is."""
    config = dict(imported or {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False})
    config.update(specials)
    config["model_max_length"] = block_size
    return config


# ---------------------------------------------------------------- import


def load_hf_tokenizer(folder, hf_config: dict, path=None) -> tuple[Tokenizer, dict]:
    """The tokenizer of a Hugging Face folder (or ``path``) and its ``tokenizer_config.json`` (or {})."""

    folder = Path(folder)
    config = read_json(folder / TOKENIZER_CONFIG, "tokenizer config") if (folder / TOKENIZER_CONFIG).exists() else {}
    if not isinstance(config, dict):
        config = {}
    if "chat_template" not in config and (folder / CHAT_TEMPLATE_FILE).exists():
        config = {**config, "chat_template": read_text(folder / CHAT_TEMPLATE_FILE, "chat template")}
    if path is not None:
        return load_tokenizer(path), {}
    if not (folder / TOKENIZER_FILE).exists():
        raise ConfigError(f"{folder}: no {TOKENIZER_FILE} (a fast tokenizer); give --tokenizer FILE, or re-save "
                          "the tokenizer with transformers: AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)")
    text = read_text(folder / TOKENIZER_FILE, "tokenizer.json")
    eos = token_text(config.get("eos_token"))
    if eos is None:
        eos = _eos_from_model_config(text, hf_config)
    try:
        tokenizer = HFTokenizer(json.dumps(json.loads(text)), eos, kind="hf")
    except json.JSONDecodeError as error:
        raise ConfigError(f"{folder / TOKENIZER_FILE}: not valid JSON: {error.msg}") from None
    except ConfigError as error:
        raise ConfigError(f"{folder / TOKENIZER_FILE}: {error}") from None
    return tokenizer, config


def _eos_from_model_config(text: str, hf_config: dict) -> str | None:
    from tokenizers import Tokenizer as Backend

    eos_id = hf_config.get("eos_token_id")
    if isinstance(eos_id, list):
        eos_id = eos_id[0] if eos_id else None
    if not isinstance(eos_id, int):
        return None  # HFTokenizer then looks for a well-known end token
    try:
        return Backend.from_str(text).id_to_token(eos_id)
    except Exception:  # tokenizers raises bare Exception for bad JSON; HFTokenizer reports it
        return None


def same_tokenizer(a: Tokenizer, b: Tokenizer) -> bool:
    """Whether two tokenizers encode alike (the end token may be named differently)."""
    if isinstance(a, HFTokenizer) and isinstance(b, HFTokenizer):
        return json.loads(a.hf_json()) == json.loads(b.hf_json())
    return {k: v for k, v in a.to_dict().items() if k != "eos_token"} == \
        {k: v for k, v in b.to_dict().items() if k != "eos_token"}
