"""Words augmentation never replaces, inserts synonyms for, moves or deletes.

Function words carry little meaning of their own and their "synonyms" are
noise; negations and degree words are here too because changing them can
flip a sentiment label ("not good" → "good"). English: the usual function
words (pronouns, determiners, auxiliaries, prepositions, conjunctions) plus
negations and contractions as SST-2 writes them ("n't", "'s"). Chinese: the
common particles, pronouns, prepositions, conjunctions, negations and degree
adverbs.
"""

from __future__ import annotations

from pathlib import Path

from lmlab.core.io import read_text

ENGLISH = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself of off on once only or
other our ours ourselves out over own same she should so some such than that the their theirs them themselves
then there these they this those through to too under until up very was we were what when where which while who
whom why will with would you your yours yourself yourselves
not no nor never none nothing neither nobody nowhere cannot can't won't don't doesn't didn't isn't aren't wasn't
weren't hasn't haven't hadn't shouldn't wouldn't couldn't mustn't n't 's 're 've 'd 'll 'm
also although though however yet still even ever quite rather really almost enough much many less least
""".split())

CHINESE = frozenset("""
的 了 和 是 在 也 就 都 而 及 与 着 或 之 把 被 让 给 对 从 向 于 以 为 因为 所以 但是 但 而且 并且 如果 虽然 还 又 再 才 已经
吗 呢 吧 啊 呀 哦 嘛 啦 我 你 他 她 它 我们 你们 他们 她们 它们 自己 什么 怎么 这 那 这个 那个 这些 那些 这样 那样 一个 有 没有
不 没 无 非 未 别 莫 勿 不是 不会 不要 不能 不太 不够 很 太 非常 十分 特别 比较 更 最 挺 真 好 就是 只是 只 得 地 个 上 下 中 里
""".split())


def default_stop_words(lang: str) -> frozenset[str]:
    return CHINESE if lang == "zh" else ENGLISH


def read_stop_words(path) -> frozenset[str]:
    """One word per line (blank lines and lines starting with # skipped)."""
    lines = read_text(Path(path), "stop-word file").splitlines()
    return frozenset(w.strip().lower() for w in lines if w.strip() and not w.lstrip().startswith("#"))
