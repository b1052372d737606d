"""Beam search over the cached :class:`~lmlab.generate.decoder.Decoder`.

Keeps the ``K`` best unfinished hypotheses by summed log-probability. Each
step looks at the best ``2K`` one-token extensions of all of them, as
Hugging Face ``generate`` does, so ``K`` can stay alive even when several
extensions end: an extension by the end token is a finished hypothesis,
scored ``log p / (generated tokens) ** length_penalty`` (the end token
counted); the others, up to ``K``, are the next beams. Hypotheses still
alive at ``max_new_tokens`` are finished as they are. Search stops early once
``K`` hypotheses are finished and none alive scores better than the worst of
them (with ``length_penalty`` > 0 a longer hypothesis could in principle
still overtake it: the same heuristic as ``generate``'s default).
With ``beam_size`` 1 this is greedy decoding.
"""

from __future__ import annotations

import numpy as np
from keras import ops


def beam_search(decoder, prompt, max_new_tokens: int, beam_size: int, eos_id: int | None,
                length_penalty: float = 1.0) -> list[int]:
    """The best hypothesis's tokens (ending with the end token when it finished by one)."""
    decoder.check_room(len(prompt), max_new_tokens)
    if max_new_tokens == 0:
        return []
    k = beam_size
    logits, cache = decoder.prefill_logits(prompt, rows=k)
    log_probs = np.asarray(ops.convert_to_numpy(ops.log_softmax(logits, axis=-1)))  # (1, V)
    beams: list[list[int]] = [[]]
    scores = np.zeros(1)
    finished: list[tuple[float, list[int]]] = []

    def score(total: float, length: int) -> float:
        return total / (length ** length_penalty)

    parents_rows = np.zeros(k, dtype=np.int64)
    index = len(prompt)
    for step in range(max_new_tokens):
        if step:
            tokens = [beams[i][-1] for i in range(len(beams))] + [beams[0][-1]] * (k - len(beams))
            parents = parents_rows
            log_probs, cache = decoder.step_log_probs(tokens, cache, index, parents)
            log_probs = log_probs[: len(beams)]
            index += 1
        totals = scores[:, None] + log_probs  # (beams, V)
        flat = np.argsort(-totals, axis=None, kind="stable")[: 2 * k]
        next_beams, next_scores, next_parents = [], [], []
        for position in flat:
            row, token = divmod(int(position), totals.shape[1])
            total = float(totals[row, token])
            if eos_id is not None and token == eos_id:
                finished.append((score(total, step + 1), beams[row] + [token]))
            elif len(next_beams) < k:
                next_beams.append(beams[row] + [token])
                next_scores.append(total)
                next_parents.append(row)
        beams, scores = next_beams, np.array(next_scores)
        # Cache row i of the next step continues beam parents[i]; padding rows copy row 0.
        parents_rows = np.array(next_parents + [next_parents[0] if next_parents else 0] * (k - len(next_parents)))
        if not beams:
            break
        if len(finished) >= k:
            worst_kept = sorted((s for s, _ in finished), reverse=True)[k - 1]
            if max(score(s, step + 1) for s in scores) < worst_kept:
                break
    for total, hypothesis in zip(scores, beams):
        finished.append((score(float(total), len(hypothesis)), hypothesis))
    return max(finished, key=lambda item: item[0])[1]
