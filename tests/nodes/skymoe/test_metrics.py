"""Caption metrics against reference implementations and hand-computed values; task metrics,
the majority baseline and the summary table on hand-made samples."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nodes.skymoe.metrics import (
    accuracy,
    bleu,
    caption_metrics,
    counting_metrics,
    grounding_accuracy,
    majority_answers,
    majority_baseline,
    meteor,
    rouge_l,
    summarise,
)
from nodes.skymoe.tasks import CLASSIFY_PROMPT, COUNT_PROMPT, Sample

# Fixed strings. Every candidate of CANDS has >= 4 tokens; CANDS2 has a 2-token one and a
# brevity penalty below 1.
CANDS = ["A large building with a parking lot beside it.",
         "many green trees are around the playground",
         "there is a river near the farmland",
         "the the the airport"]
REFS = [["A big building is next to a parking lot.",
         "There is a large building with a parking lot."],
        ["several green trees are around a playground",
         "a playground is surrounded by many green trees"],
        ["a river goes through the farmland", "there is a river near some farmland"],
        ["an airport with several planes", "the airport has runways"]]
CANDS2 = ["a building", "trees near a river and a road", "a dense residential area with houses"]
REFS2 = [["a large building", "a building with a parking lot here"],
         ["trees near a river", "some trees near a river and a road here"],
         ["many houses in a dense residential area", "houses and roads"]]

# Reference values computed with sacrebleu 2.6.0 (corpus_bleu / sentence_bleu on the
# lower-cased alphanumeric tokens joined by spaces, tokenize="none", smooth_method "none" or
# "add-k" with smooth_value 1), nltk 3.10.4 meteor_score (stemmer = identity, wordnet = an object
# whose synsets() is empty, i.e. its exact module only) and rouge-score 0.1.2 RougeScorer
# (["rougeL"], use_stemmer=False).score_multi. `test_against_installed_references` recomputes
# them live where those packages are installed (the `dev` extra).
SACREBLEU_CORPUS = 0.6255675782214535
SACREBLEU_CORPUS_ADD1 = 0.6450664618828739
SACREBLEU_CORPUS2 = 0.6209889817483006
SACREBLEU_CORPUS2_ADD1 = 0.6354735489477505
SACREBLEU_SENTENCE_ADD1 = [0.7545031759729781, 0.6356579408934371, 0.76520588325569,
                           0.45180100180492244]
NLTK_METEOR_EXACT = [0.7766439909297052, 0.6914285714285714, 0.8412698412698414, 0.46875]
NLTK_METEOR_EXACT2 = [0.3448275862068965, 0.7942949907235621, 0.7014492753623188]
ROUGE_SCORE_MULTI_F = [0.7777777777777778, 0.7142857142857143, 0.8571428571428571, 0.5]
ROUGE_SCORE_MULTI_F2 = [0.8, 0.8750000000000001, 0.6153846153846153]


def test_bleu_matches_sacrebleu_values() -> None:
    assert bleu(CANDS, REFS) == pytest.approx(SACREBLEU_CORPUS, abs=1e-9)
    assert bleu(CANDS, REFS, smooth="add-one") == pytest.approx(SACREBLEU_CORPUS_ADD1, abs=1e-9)
    assert bleu(CANDS2, REFS2) == pytest.approx(SACREBLEU_CORPUS2, abs=1e-9)
    assert bleu(CANDS2, REFS2, smooth="add-one") == pytest.approx(SACREBLEU_CORPUS2_ADD1,
                                                                  abs=1e-9)
    for c, r, want in zip(CANDS, REFS, SACREBLEU_SENTENCE_ADD1, strict=True):
        assert bleu([c], [r], smooth="add-one") == pytest.approx(want, abs=1e-9)


def test_bleu_edge_cases() -> None:
    assert bleu(["a b c d"], [["a b c d"]]) == pytest.approx(1.0)
    assert bleu(["a b c d"], [["e f g h"]]) == 0.0          # no unigram matches
    assert bleu(["a b x y"], [["a b c d"]]) == 0.0          # no 3-gram matches, unsmoothed
    # brevity penalty by hand: 4 candidate tokens against a closest reference of 8
    assert bleu(["a b c d"], [["a b c d e f g h"]]) == pytest.approx(2.718281828459045 ** -1)
    with pytest.raises(ValueError, match="one list per candidate"):
        bleu(["a"], [])
    with pytest.raises(ValueError, match="smooth='exp'"):
        bleu(["a"], [["a"]], smooth="exp")


def test_meteor_matches_nltk_exact_module_and_hand_values() -> None:
    for c, r, want in zip(CANDS + CANDS2, REFS + REFS2, NLTK_METEOR_EXACT + NLTK_METEOR_EXACT2,
                          strict=True):
        assert meteor(c, r) == pytest.approx(want, abs=1e-9)
    # By hand: "a river near the farmland" vs "there is a river near some farmland": 4 matches,
    # P = 4/5, R = 4/7, Fmean = PR / (0.9 P + 0.1 R), 2 chunks -> penalty 0.5 * (2/4)^3.
    p, r = 4 / 5, 4 / 7
    want = p * r / (0.9 * p + 0.1 * r) * (1 - 0.5 * 0.5 ** 3)
    assert meteor("a river near the farmland", ["there is a river near some farmland"]) == \
        pytest.approx(want, abs=1e-12)
    assert want == pytest.approx(0.5514705882, abs=1e-9)
    # Repeated words pair from the end: "the the the airport" vs "the airport has runways":
    # the(2)-the(0), airport(3)-airport(1): one chunk of 2; P = R = 1/2.
    assert meteor("the the the airport", ["the airport has runways"]) == \
        pytest.approx(0.5 * (1 - 0.5 * 0.5 ** 3))
    assert meteor("nothing here", ["a cat"]) == 0.0


def test_rouge_l_matches_rouge_score_and_coco_rule() -> None:
    for c, r, want in zip(CANDS + CANDS2, REFS + REFS2, ROUGE_SCORE_MULTI_F + ROUGE_SCORE_MULTI_F2,
                          strict=True):
        assert rouge_l(c, r, beta=1.0, combine="max-f") == pytest.approx(want, abs=1e-9)
    # By hand (COCO rule, beta 1.2): LCS("a river near the farmland",
    # "there is a river near some farmland") = 4 -> P = 4/5, R = 4/7.
    p, r = 4 / 5, 4 / 7
    want = (1 + 1.44) * p * r / (r + 1.44 * p)
    assert rouge_l("a river near the farmland", ["there is a river near some farmland"]) == \
        pytest.approx(want, abs=1e-12)
    assert want == pytest.approx(0.6472148541, abs=1e-9)
    # COCO takes the best precision and the best recall over references separately:
    # ref A gives P = 1, R = 1/4; ref B gives P = 1/2, R = 1/2 -> P = 1, R = 1/2.
    got = rouge_l("a b", ["a b c d e f g h", "a x"])
    assert got == pytest.approx((1 + 1.44) * 1 * 0.5 / (0.5 + 1.44 * 1))
    with pytest.raises(ValueError, match="combine='bad'"):
        rouge_l("a", ["a"], combine="bad")


def test_against_installed_references() -> None:
    sacrebleu = pytest.importorskip("sacrebleu", reason="sacrebleu not installed (dev extra)")
    meteor_mod = pytest.importorskip("nltk.translate.meteor_score",
                                     reason="nltk not installed (dev extra)")
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer",
                                       reason="rouge-score not installed (dev extra)")

    def tok(s: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", s.lower())

    class Identity:
        def stem(self, word: str) -> str:
            return word

    class NoSynonyms:
        def synsets(self, word: str) -> list[object]:
            return []

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    for cands, refs in ((CANDS, REFS), (CANDS2, REFS2)):
        joined = [" ".join(tok(c)) for c in cands]
        streams = [[" ".join(tok(r[k])) for r in refs] for k in range(2)]
        ref = sacrebleu.corpus_bleu(joined, streams, tokenize="none", smooth_method="none",
                                    force=True).score / 100
        assert bleu(cands, refs) == pytest.approx(ref, abs=1e-9)
        for c, r in zip(cands, refs, strict=True):
            want = meteor_mod.meteor_score([tok(x) for x in r], tok(c), stemmer=Identity(),
                                           wordnet=NoSynonyms())
            assert meteor(c, r) == pytest.approx(want, abs=1e-9)
            want = scorer.score_multi(r, c)["rougeL"].fmeasure
            assert rouge_l(c, r, beta=1.0, combine="max-f") == pytest.approx(want, abs=1e-9)


def test_caption_metrics_aggregates() -> None:
    got = caption_metrics(CANDS, REFS)
    assert got["bleu4"] == pytest.approx(SACREBLEU_CORPUS, abs=1e-9)
    assert got["meteor"] == pytest.approx(sum(NLTK_METEOR_EXACT) / 4, abs=1e-9)
    assert 0 < got["rouge_l"] <= 1


def test_task_metrics() -> None:
    assert accuracy([True, False, True, True]) == pytest.approx(0.75)
    got = counting_metrics([3, None, 5, 0], [3, 2, 7, 0])
    assert got["exact_accuracy"] == pytest.approx(0.5)
    assert got["mae"] == pytest.approx((0 + 2 + 2 + 0) / 4)
    got = grounding_accuracy([0.9, 0.6, 0.5, 0.1])
    assert got["acc@0.5"] == pytest.approx(0.75)
    assert got["acc@0.7"] == pytest.approx(0.25)
    assert got["mean_iou"] == pytest.approx(0.525)
    with pytest.raises(ValueError, match="no predictions"):
        accuracy([])


def _s(task: str, answer: str, qtype: str, prompt: str = "q", name: str = "x.png") -> Sample:
    return Sample(task, Path("/data") / task / name, prompt, answer, qtype)


def test_majority_baseline_and_summary() -> None:
    train = [_s("rsvqa-lr", "yes", "presence"), _s("rsvqa-lr", "yes", "presence"),
             _s("rsvqa-lr", "no", "presence"), _s("rsvqa-lr", "no", "comp"),
             _s("rsvqa-lr", "3", "count"), _s("rsvqa-lr", "3", "count"),
             _s("rsvqa-lr", "0", "count"), _s("ucmerced", "forest", "class", CLASSIFY_PROMPT),
             _s("neon-count", "4", "count", COUNT_PROMPT)]
    assert majority_answers(train)[("rsvqa-lr", "presence")] == "yes"
    test = [_s("rsvqa-lr", "yes", "presence"), _s("rsvqa-lr", "yes", "comp"),
            _s("rsvqa-lr", "no", "rural_urban"), _s("rsvqa-lr", "5", "count"),
            _s("ucmerced", "beach", "class", CLASSIFY_PROMPT),
            _s("neon-count", "6", "count", COUNT_PROMPT)]
    pred = majority_baseline(train, test)
    # rural_urban has no training sample: the task's majority (ties -> smallest text: "3"
    # and "no", "yes" have 2, 2, 2 -> "3")
    assert pred == ["yes", "no", "3", "3", "forest", "4"]
    table = summarise(test, pred)
    assert table["rsvqa-lr/vqa"]["n"] == 3
    assert table["rsvqa-lr/vqa"]["accuracy"] == pytest.approx(1 / 3)
    assert table["rsvqa-lr/counting/count"]["mae"] == pytest.approx(2.0)
    assert table["rsvqa-lr/counting"]["exact_accuracy"] == 0.0
    assert table["ucmerced/classification"]["accuracy"] == 0.0
    assert table["neon-count/counting"]["mae"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="no training sample of task 'eurosat-rgb'"):
        majority_baseline(train, [_s("eurosat-rgb", "forest", "class")])
