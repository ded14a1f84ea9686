"""SpaceVerse's algorithm core, in process: confidence net, preprocessing, wire format,
baselines' rules and the pipeline that runs the methods. See nodes/spaceverse/README.md.

Names are imported on first use (torch loads only with the modules that need it).
"""

from __future__ import annotations

from nodes.lazy import lazy_exports

_EXPORTS = {
    "nodes.spaceverse.errors": ("SpaceVerseConfigError", "SpaceVerseError", "WireFormatError"),
    "nodes.spaceverse.confidence": ("ABLATION_AFTER_ANSWER", "ABLATION_IMAGE_ONLY",
                                    "SPACEVERSE_STAGES", "ConfidenceNet", "ConfidenceRecord",
                                    "OnboardDecision", "answer_similarity", "confidence_loss",
                                    "record_sample", "run_onboard", "train_confidence"),
    "nodes.spaceverse.preprocess": ("ClipRegionScorer", "PreprocessConfig", "RegionPlan",
                                    "RegionScorer", "plan_regions", "region_scales",
                                    "region_scores", "to_wire"),
    "nodes.spaceverse.wire": ("Region", "WireImage", "decode", "encode", "rebuild"),
    "nodes.spaceverse.baselines": ("AIRGPolicy", "ground_only", "satellite_only",
                                   "tabi_confidence", "tabi_offload"),
    "nodes.spaceverse.pipeline": ("METHODS", "Item", "LinkModel", "MethodResult",
                                  "PipelineConfig", "Timing", "run_pipeline", "summarise"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
