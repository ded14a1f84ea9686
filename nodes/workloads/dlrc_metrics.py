"""The `dlrc` job's metric families, standard library only: a dashboard builder reads them
without importing numpy or torch (the job itself declares them on its node's Metrics)."""

from __future__ import annotations

from nodes.metrics import Family, declare

__all__ = ["FAMILIES"]

FAMILIES: tuple[Family, ...] = (
    declare("leo_dlrc_bpp", "gauge", "Bits per patch pixel a satellite sends, by part "
            "(total, entropy_coded, map_lzma, map_raw, header, plain codec).",
            ("satellite", "part")),
    declare("leo_dlrc_psnr_decibels", "gauge", "PSNR of the ground's reconstruction of a "
            "satellite's patch.", ("satellite",), "decibels"),
    declare("leo_dlrc_ms_ssim", "gauge", "MS-SSIM of the ground's reconstruction of a "
            "satellite's patch.", ("satellite",)),
    declare("leo_dlrc_sync_round_seconds", "gauge", "Seconds from a satellite's first "
            "signature send to holding every list (ISL exchange).", (), "seconds"),
    declare("leo_dlrc_encode_seconds", "gauge", "On-board encode time by part (codec, dlrc) "
            "and mode (measured here, emulated for the accelerator).", ("part", "mode"),
            "seconds"),
    declare("leo_dlrc_encoder_overhead_ratio", "gauge", "DLRC's extra encode time over the "
            "codec's, by mode (measured, emulated).", ("mode",), "ratio"),
    declare("leo_dlrc_signature_bytes_total", "counter", "Signature-list bytes sent to each "
            "peer over the data plane.", ("peer",), "bytes"),
    declare("leo_dlrc_payload_bytes_total", "counter", "DLRC payload bytes delivered "
            "(satellite: sent; ground: received), by peer.", ("peer",), "bytes"),
)
