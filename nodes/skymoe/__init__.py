"""SkyMoE's tasks, metrics and training-data augmentation (the model lives in
`nodes.models.skymoe`). See nodes/skymoe/README.md.

Names are imported on first use (numpy and pillow load only with the augmentation).
"""

from __future__ import annotations

from nodes.lazy import lazy_exports

_EXPORTS = {
    "nodes.skymoe.tasks": ("CAPTION_PROMPT", "CLASSIFY_PROMPT", "COUNT_PROMPT", "FAMILIES",
                           "REFER_TEMPLATE", "SKYMOE_TASKS", "RefExpr", "conversation",
                           "load_skymoe_samples", "parse_refer", "referring_expressions",
                           "sample_objects", "score", "task_family"),
    "nodes.skymoe.metrics": ("accuracy", "bleu", "caption_metrics", "counting_metrics",
                             "grounding_accuracy", "majority_baseline", "meteor", "rouge_l",
                             "summarise"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
