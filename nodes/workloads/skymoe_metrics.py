"""The live metric families of the `skymoe-serve` workload.

Standard library only: the orchestrator's dashboards import `FAMILIES` to build the workload's
row without torch, and the ground agent declares the same families when a serve job starts.
Every sample also carries the agent's `node` label and the served model's name (`model`), so
two serve jobs (a dense and a MoE model) on one station stay apart.

- routing (MoE models only): top-k assignments per layer and expert, mean routing entropy and
  load balance per MoE layer, over the requests served so far;
- latency: the last request's per-token latency and the summed seconds and tokens, `timing` =
  `measured` (this host, `device` = `host-cpu`) or `emulated` (roofline on `device` = the
  accelerator option), so PromQL divides the two rates for a windowed mean;
- the queue: requests waiting; requests, correct answers and accuracy so far per task.
"""

from __future__ import annotations

from nodes.metrics import Family, declare

__all__ = ["FAMILIES"]

FAMILIES: tuple[Family, ...] = (
    declare("leo_skymoe_expert_tokens_total", "counter",
            "Tokens routed to each expert of each MoE layer (top-k assignments, prefill and "
            "generated tokens).", ("model", "layer", "expert")),
    declare("leo_skymoe_routing_entropy_nats", "gauge",
            "Mean entropy of the router's distribution per token, per MoE layer, so far.",
            ("model", "layer"), "nats"),
    declare("leo_skymoe_load_balance_ratio", "gauge",
            "Entropy of the tokens' shares over the experts, normalised (1 = even), per MoE "
            "layer, so far.", ("model", "layer"), "ratio"),
    declare("leo_skymoe_token_latency_seconds", "gauge",
            "Per-token decoding latency of the last request: measured on this host or emulated "
            "on the ground accelerator.", ("model", "timing", "device"), "seconds"),
    declare("leo_skymoe_token_time_seconds_total", "counter",
            "Summed per-token decoding seconds (measured or emulated).",
            ("model", "timing", "device"), "seconds"),
    declare("leo_skymoe_generated_tokens_total", "counter",
            "Tokens generated (answers' tokens, end token included).", ("model", "task")),
    declare("leo_skymoe_queue_length", "gauge",
            "Requests waiting to be served.", ("model",)),
    declare("leo_skymoe_requests_total", "counter",
            "Requests answered, by task.", ("model", "task")),
    declare("leo_skymoe_correct_total", "counter",
            "Answers scored correct (grounding: IoU >= 0.5), by task.", ("model", "task")),
    declare("leo_skymoe_accuracy_ratio", "gauge",
            "Correct answers over requests answered so far, by task.", ("model", "task"),
            "ratio"),
)
