"""Per-task evaluation: majority baseline beside each model, families, routing per family."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.models.skymoe.evaluate import cap_per_task, evaluate, format_table
from nodes.models.skymoe.net import upcycle_net
from nodes.models.skymoe.vlm import SkyMoEVLM
from nodes.models.vlm.data import Sample, load_samples


def test_evaluate_scores_majority_and_models_with_routing(shared_data: Path, tiny_dense,
                                                          qwen_tokenizer) -> None:
    samples = cap_per_task(load_samples(shared_data / "images", tasks=("ucmerced",)), 6)
    assert len(samples) == 6 and len({s.image_key for s in samples}) == 6
    majority = {("ucmerced", "class"): samples[0].answer}
    models = {"moe": SkyMoEVLM(upcycle_net(tiny_dense, 4), qwen_tokenizer)}
    result = evaluate(models, samples, majority, "vlm-data", max_new_tokens=4)
    (fam,) = result["by_family"]
    assert fam["family"] == "classification" and fam["samples"] == 6
    hits = sum(s.answer == samples[0].answer for s in samples)
    assert fam["majority"]["correct"] == pytest.approx(hits / 6)
    assert 0.0 <= fam["moe"]["correct"] <= 1.0
    layers = result["routing"]["moe"]["classification"]
    assert [ly["layer"] for ly in layers] == [1, 3] and layers[0]["tokens"] > 6 * 36
    table = format_table(result["by_task"], ["moe"], ("task", "qtype"))
    assert table.splitlines()[2].startswith("| ucmerced | class | 6 |")


def test_cap_per_task_is_by_hash_not_order() -> None:
    a = [Sample("t", Path(f"/x/{i}.png"), "p", "a", "q") for i in range(10)]
    assert cap_per_task(a, 3) == cap_per_task(list(reversed(a)), 3)
    assert len(cap_per_task(a, 3)) == 3 and len(cap_per_task(a, None)) == 10
