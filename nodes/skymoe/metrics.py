"""SkyMoE's evaluation metrics: caption metrics implemented here, task accuracies, baselines.

Owns BLEU-4, METEOR and ROUGE-L (pure Python, no downloads), the accuracy of each task family
(VQA/classification accuracy, counting exact accuracy and MAE, grounding accuracy at IoU 0.5 and
0.7), the majority baseline every figure is reported beside, and the per-task summary table.

Conventions (each checked in the tests against reference implementations or hand-computed
values; see nodes/skymoe/README.md):

- Tokens: `caption_tokens` (lower case, alphanumeric words; punctuation dropped).
- BLEU-4 (Papineni et al. 2002): corpus level, clipped n-gram counts over all references,
  uniform weights, brevity penalty against the closest reference length (the shorter on a tie).
  `smooth="add-one"` adds 1 to the matches and totals of n = 2..4 (for sentence level).
- METEOR (Banerjee and Lavie 2005): the exact-match module only (no stemming, no WordNet
  synonyms: WordNet cannot be downloaded here), alpha 0.9, beta 3, gamma 0.5; repeated words
  pair up from the end of both sentences; best over references. So it reads lower than Meteor
  1.5 with paraphrase tables, which the captioning papers used.
- ROUGE-L (Lin 2004): longest common subsequence; `combine="coco"` (default) takes the best
  precision and the best recall over references and beta 1.2, as the COCO caption evaluation
  does; `combine="max-f"` takes the best F over references (rouge-score's multi-reference rule).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

from nodes.models.vlm.data import Sample

__all__ = ["accuracy", "bleu", "caption_metrics", "caption_tokens", "counting_metrics",
           "grounding_accuracy", "majority_answers", "majority_baseline", "meteor", "rouge_l",
           "summarise"]

_TOKEN = re.compile(r"[a-z0-9]+")


def caption_tokens(text: str | Sequence[str]) -> list[str]:
    """Lower-case alphanumeric words of a caption (a list of tokens passes through lowered)."""
    if isinstance(text, str):
        return _TOKEN.findall(text.lower())
    return [t.lower() for t in text]


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu(candidates: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4,
         smooth: str = "none") -> float:
    """Corpus BLEU-`max_n` in [0, 1] of `candidates[i]` against `references[i]` (one or more
    reference strings each)."""
    if len(candidates) != len(references):
        raise ValueError(f"bleu: {len(candidates)} candidates but {len(references)} reference "
                         "lists, expected one list per candidate")
    if smooth not in ("none", "add-one"):
        raise ValueError(f"bleu: smooth={smooth!r}, expected 'none' or 'add-one'")
    matches, totals = [0] * max_n, [0] * max_n
    cand_len = ref_len = 0
    for cand, refs in zip(candidates, references, strict=True):
        c = caption_tokens(cand)
        rs = [caption_tokens(r) for r in refs]
        if not rs:
            raise ValueError("bleu: a candidate has no reference, expected at least one")
        cand_len += len(c)
        ref_len += min((abs(len(r) - len(c)), len(r)) for r in rs)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(c, n)
            best: Counter[tuple[str, ...]] = Counter()
            for r in rs:
                best |= _ngrams(r, n)
            matches[n - 1] += sum(min(k, best[g]) for g, k in counts.items())
            totals[n - 1] += max(0, len(c) - n + 1)
    if cand_len == 0:
        return 0.0
    log_p = 0.0
    for n in range(max_n):
        m, t = matches[n], totals[n]
        if smooth == "add-one" and n > 0:
            m, t = m + 1, t + 1
        if m == 0 or t == 0:
            return 0.0
        log_p += math.log(m / t) / max_n
    bp = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / cand_len)
    return bp * math.exp(log_p)


def _align_exact(hyp: Sequence[str], ref: Sequence[str]) -> list[tuple[int, int]]:
    """Exact unigram alignment: the k-th last occurrence of a word in the hypothesis pairs
    with its k-th last occurrence in the reference. Sorted by hypothesis position."""
    in_ref: dict[str, list[int]] = {}
    for j, w in enumerate(ref):
        in_ref.setdefault(w, []).append(j)
    pairs = []
    for i in range(len(hyp) - 1, -1, -1):
        slots = in_ref.get(hyp[i])
        if slots:
            pairs.append((i, slots.pop()))
    return sorted(pairs)


def _chunks(pairs: Sequence[tuple[int, int]]) -> int:
    """Runs of alignments adjacent in both sentences."""
    return sum(1 for k, (i, j) in enumerate(pairs)
               if k == 0 or (i, j) != (pairs[k - 1][0] + 1, pairs[k - 1][1] + 1))


def meteor(candidate: str, references: Sequence[str], alpha: float = 0.9, beta: float = 3.0,
           gamma: float = 0.5) -> float:
    """Sentence METEOR (exact matches only) in [0, 1], best over `references`."""
    if not references:
        raise ValueError("meteor: no reference, expected at least one")
    hyp = caption_tokens(candidate)
    best = 0.0
    for ref_text in references:
        ref = caption_tokens(ref_text)
        pairs = _align_exact(hyp, ref)
        m = len(pairs)
        if m == 0:
            continue
        p, r = m / len(hyp), m / len(ref)
        fmean = p * r / (alpha * p + (1 - alpha) * r)
        penalty = gamma * (_chunks(pairs) / m) ** beta
        best = max(best, fmean * (1 - penalty))
    return best


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, references: Sequence[str], beta: float = 1.2,
            combine: str = "coco") -> float:
    """Sentence ROUGE-L F-measure in [0, 1] (see the module docstring for `combine`)."""
    if not references:
        raise ValueError("rouge_l: no reference, expected at least one")
    if combine not in ("coco", "max-f"):
        raise ValueError(f"rouge_l: combine={combine!r}, expected 'coco' or 'max-f'")
    c = caption_tokens(candidate)
    prs = []
    for ref_text in references:
        r = caption_tokens(ref_text)
        lcs = _lcs(c, r)
        prs.append((lcs / len(c) if c else 0.0, lcs / len(r) if r else 0.0))

    def f(p: float, r: float) -> float:
        return (1 + beta**2) * p * r / (r + beta**2 * p) if p > 0 and r > 0 else 0.0

    if combine == "coco":
        return f(max(p for p, _ in prs), max(r for _, r in prs))
    return max(f(p, r) for p, r in prs)


def caption_metrics(candidates: Sequence[str], references: Sequence[Sequence[str]]
                    ) -> dict[str, float]:
    """Corpus BLEU-4 and the mean sentence METEOR and ROUGE-L over images."""
    if not candidates:
        raise ValueError("caption_metrics: no candidates")
    n = len(candidates)
    return {"bleu4": bleu(candidates, references),
            "meteor": sum(meteor(c, r) for c, r in zip(candidates, references, strict=True)) / n,
            "rouge_l": sum(rouge_l(c, r) for c, r in zip(candidates, references, strict=True))
            / n}


def accuracy(correct: Sequence[bool]) -> float:
    """Fraction of true values (VQA, classification, counting exact accuracy)."""
    if not correct:
        raise ValueError("accuracy: no predictions")
    return sum(bool(c) for c in correct) / len(correct)


def counting_metrics(predicted: Sequence[int | None], truth: Sequence[int]) -> dict[str, float]:
    """Exact-count accuracy and mean absolute error (a missing number counts as 0)."""
    if len(predicted) != len(truth) or not truth:
        raise ValueError(f"counting_metrics: {len(predicted)} predictions for {len(truth)} "
                         "truths, expected the same non-zero number")
    errors = [abs((p or 0) - t) for p, t in zip(predicted, truth, strict=True)]
    return {"exact_accuracy": sum(e == 0 and p is not None
                                  for e, p in zip(errors, predicted, strict=True)) / len(truth),
            "mae": sum(errors) / len(truth)}


def grounding_accuracy(ious: Sequence[float], thresholds: Sequence[float] = (0.5, 0.7)
                       ) -> dict[str, float]:
    """Fraction of predictions with IoU >= each threshold (`acc@0.5`, `acc@0.7`) and mean IoU."""
    if not ious:
        raise ValueError("grounding_accuracy: no predictions")
    out = {f"acc@{t:g}": sum(i >= t for i in ious) / len(ious) for t in thresholds}
    out["mean_iou"] = sum(ious) / len(ious)
    return out


def majority_answers(train: Sequence[Sample]) -> dict[tuple[str, str], str]:
    """The most frequent training answer per (task, qtype) and per (task, "*") (ties: the
    smallest answer text, so the baseline is deterministic)."""
    groups: dict[tuple[str, str], Counter[str]] = {}
    for s in train:
        for key in ((s.task, s.qtype), (s.task, "*")):
            groups.setdefault(key, Counter())[s.answer] += 1
    return {k: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for k, c in groups.items()}


def majority_baseline(train: Sequence[Sample], test: Sequence[Sample]) -> list[str]:
    """For each test sample, the majority training answer of its (task, qtype), else of its
    task. Score them with `summarise` like any model's predictions."""
    answers = majority_answers(train)
    out = []
    for s in test:
        a = answers.get((s.task, s.qtype), answers.get((s.task, "*")))
        if a is None:
            raise ValueError(f"majority_baseline: no training sample of task {s.task!r}")
        out.append(a)
    return out


def summarise(samples: Sequence[Sample], predictions: Sequence[str],
              references: Mapping[str, Sequence[str]] | None = None
              ) -> dict[str, dict[str, float]]:
    """Metrics per `task/family` and `task/family/qtype` (RSVQA's count questions are counting,
    its other types VQA): `n` and, by family, `accuracy`; `exact_accuracy`
    and `mae`; `acc@0.5`, `acc@0.7`, `mean_iou`; or `bleu4`, `meteor`, `rouge_l` (captions: one
    prediction per image, `references` by image key, default each sample's own answer)."""
    from nodes.skymoe.tasks import parse_count, score, task_family

    if len(samples) != len(predictions):
        raise ValueError(f"summarise: {len(samples)} samples but {len(predictions)} predictions")
    groups: dict[tuple[str, str], list[int]] = {}
    for k, s in enumerate(samples):
        fam = task_family(s)
        for key in (f"{s.task}/{fam}", f"{s.task}/{fam}/{s.qtype}"):
            groups.setdefault((key, fam), []).append(k)
    out = {}
    for (key, fam), idx in sorted(groups.items()):
        row: dict[str, float] = {"n": float(len(idx))}
        if fam in ("vqa", "classification"):
            row["accuracy"] = accuracy([bool(score(samples[k], predictions[k])["correct"])
                                        for k in idx])
        elif fam == "counting":
            for k in idx:
                score(samples[k], predictions[k])  # validates exact-count answers
            row.update(counting_metrics([parse_count(predictions[k]) for k in idx],
                                        [int(samples[k].answer) for k in idx]))
        elif fam == "grounding":
            row.update(grounding_accuracy([float(score(samples[k], predictions[k])["iou"])
                                           for k in idx]))
        else:
            refs = [list((references or {}).get(samples[k].image_key, [samples[k].answer]))
                    for k in idx]
            row.update(caption_metrics([predictions[k] for k in idx], refs))
        out[key] = row
    return out
