"""A sequence's text as its tokens arrive: what may be sent now, and where a stop string ends it.

Tokens are decoded after a few tokens before them (the prompt's, then the sequence's own) so
that joins come out as the tokenizer writes them (a word tokenizer's spaces, BPE merges), as :func:`lmlab.generate.decoder.generate_text`
does. Text is held back while it might still become a stop string (OpenAI's ``stop`` never
appears in the output) or ends in half a multi-byte character.
"""

from __future__ import annotations

JOIN_CONTEXT = 8  # tokens decoded before the new ones, for the joins
COMMIT_EVERY = 32  # new tokens decoded together before their text is fixed and decoding starts after them


class TextStream:
    def __init__(self, tokenizer, prompt: list[int], stop: list[str]):
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.before = list(prompt[-JOIN_CONTEXT:])
        self.prefix = tokenizer.decode(self.before)
        self.tokens: list[int] = []  # new tokens not yet committed
        self.done = ""  # the text of the committed tokens
        self.text = ""  # the continuation so far (a stop string cut off)
        self.sent = 0  # characters of it already handed out
        self.stopped = False

    def add(self, token: int) -> str:
        """Take one new token; the text that may be sent now (maybe empty). Sets ``stopped`` on a stop string."""
        self.tokens.append(token)
        whole = self.tokenizer.decode(self.before + self.tokens)
        piece = whole[len(self.prefix):] if whole.startswith(self.prefix) else self.tokenizer.decode(self.tokens)
        text = self.done + piece
        if len(self.tokens) >= COMMIT_EVERY and not piece.endswith("\ufffd"):
            # Decode from here on after these tokens only, so a token costs the same however long the text grew.
            self.done, self.before = text, (self.before + self.tokens)[-JOIN_CONTEXT:]
            self.prefix, self.tokens = self.tokenizer.decode(self.before), []
        cut = min((i for i in (text.find(s, max(0, self.sent - len(s))) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = text[:cut], True
            return self.flush()
        self.text = text
        safe = len(text) - self.held_back(text)
        out = text[self.sent:safe] if safe > self.sent else ""
        self.sent = max(self.sent, safe)
        return out

    def flush(self) -> str:
        """Everything not yet sent (at the end of the sequence)."""
        out = self.text[self.sent:]
        self.sent = len(self.text)
        return out

    def held_back(self, text: str) -> int:
        """How many trailing characters might still turn into a stop string or a whole character."""
        hold = 1 if text.endswith("\ufffd") else 0
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        return hold
