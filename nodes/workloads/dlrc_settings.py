"""`dlrc` job options (both roles read the same set), the views, and the live metric families.

Owns the option schema, the crop of each satellite's view out of the shared scene and the
metric declarations; the satellite and ground halves (dlrc_satellite.py, dlrc_ground.py) and
the registered kind (dlrc_job.py) build on it. numpy only (torch loads with the halves).

| option | role | default | meaning |
|---|---|---|---|
| `models` | both | required | the codec cache folder (`make models-codecs`) |
| `codec`, `lmbda` | both | `bmshj2018-hyperprior`, required | which cached codec |
| `satellites` | both | required | observer node names; satellite ids are 1.. in this order |
| `ground` | both | required | the ground station node that reconstructs |
| `scene` | both | required | the image file every observer sees a part of |
| `window_px` | both | required | `[top, left, size]`: the W x W window of the scene |
| `offsets_px` | both | required | per satellite `[top, left]` in the window (x 16 px) |
| `patch_px` | both | 256 | P: the side of each satellite's patch |
| `rounds`, `seed` | both | 20, 0 | LSH rounds k and the shared rotation seed |
| `representative` | both | `original` | `original` or `mean` |
| `margin_px` | both | 0 | scene around each patch the analysis sees (x 16 px, see below) |
| `priority` | both | `satellite-id` | `satellite-id`, `link-quality` or `energy` |
| `link_quality`, `energy_j` | satellite | 0, 0 | this satellite's state for the priority rules |
| `downlink` | satellite | `contact` | `contact`: inside its own contacts; `route`: at once |
| `accelerator` | satellite | none | also emulate the transforms' time on this board |
| `plain_baseline` | satellite | true | also compress with the plain codec (bytes to compare) |
| `sync_timeout_s` | satellite | 60 | how long to wait for the other lists |
| `timeout_s` | ground | none | stop waiting for payloads after this long |

`margin_px` is for a codec trained with that margin (`make models-codecs-margin`): the window
is mirrored past its edge; the plain baseline is then the same codec without DLRC.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nodes.errors import WorkloadOptionsError
from nodes.workloads.dlrc_metrics import FAMILIES  # noqa: F401 -- re-exported
from nodes.workloads.options import Options

KIND = "dlrc"
LATENT_STRIDE_PX = 16
SIG_TOPIC = "dlrc/signatures"
PAYLOAD_TOPIC = "dlrc/payload"
DOWNLINK_MODES = ("contact", "route")



@dataclass(frozen=True)
class DlrcSettings:
    """The parsed options (see the module docstring)."""

    models: Path
    codec: str
    lmbda: float
    satellites: list[str]
    ground: str
    scene: Path
    window_px: tuple[int, int, int]
    offsets_px: list[tuple[int, int]]
    patch_px: int
    rounds: int
    seed: int
    representative: str
    priority: str
    margin_px: int = 0

    def sat_id(self, node: str) -> int:
        return self.satellites.index(node) + 1

    @property
    def node_of(self) -> dict[int, str]:
        return {i + 1: name for i, name in enumerate(self.satellites)}


def parse_common(opts: Options) -> DlrcSettings:
    """Reads the options both roles share; WorkloadOptionsError names the bad one."""
    from nodes.dlrc.arbiter import PRIORITY_RULES
    from nodes.dlrc.selector import REPRESENTATIVES

    s = DlrcSettings(
        models=Path(opts.text("models")),
        codec=opts.text("codec", "bmshj2018-hyperprior"),
        lmbda=opts.number("lmbda"),
        satellites=opts.names("satellites"),
        ground=opts.text("ground"),
        scene=Path(opts.text("scene")),
        window_px=tuple(opts.int_list("window_px", 3)),
        offsets_px=[(t, left) for t, left in opts.int_rows("offsets_px", 2)],
        patch_px=opts.integer("patch_px", 256, low=64),
        rounds=opts.integer("rounds", 20, low=1, high=64),
        seed=opts.integer("seed", 0, low=0),
        representative=opts.text("representative", "original"),
        priority=opts.text("priority", "satellite-id"),
        margin_px=opts.integer("margin_px", 0, low=0),
    )
    bad = opts._bad  # noqa: SLF001 -- one message shape for the cross-field checks too
    if s.representative not in REPRESENTATIVES:
        raise bad("representative", s.representative, f"one of {', '.join(REPRESENTATIVES)}")
    if s.priority not in PRIORITY_RULES:
        raise bad("priority", s.priority, f"one of {', '.join(sorted(PRIORITY_RULES))}")
    if len(s.offsets_px) != len(s.satellites):
        raise bad("offsets_px", s.offsets_px, f"one [top, left] per satellite "
                  f"({len(s.satellites)})")
    if s.margin_px % LATENT_STRIDE_PX:
        raise bad("margin_px", s.margin_px, f"a multiple of {LATENT_STRIDE_PX}")
    if s.patch_px % 64:
        raise bad("patch_px", s.patch_px, "a multiple of 64 (the codec's stride)")
    _top, _left, size = s.window_px
    if size < s.patch_px or min(s.window_px) < 0:
        raise bad("window_px", list(s.window_px), f"[top >= 0, left >= 0, size >= patch_px "
                  f"({s.patch_px})]")
    for t, left in s.offsets_px:
        if t % LATENT_STRIDE_PX or left % LATENT_STRIDE_PX or min(t, left) < 0 \
                or max(t, left) + s.patch_px > size:
            raise bad("offsets_px", [t, left], f"multiples of {LATENT_STRIDE_PX} in "
                      f"[0, {size - s.patch_px}]")
    if s.ground in s.satellites:
        raise bad("ground", s.ground, "a node that is not one of the satellites")
    return s


def load_views(s: DlrcSettings, with_margin: bool = False) -> dict[str, np.ndarray]:
    """Every satellite's patch (uint8 P x P x 3), cropped from the scene's window; with
    `with_margin`, what its analysis sees: the patch and `margin_px` around it (the window
    mirrored past its edge, as experiments/dlrc/rd.py does)."""
    from nodes.models.codecs.images import load_rgb

    if not s.scene.is_file():
        raise WorkloadOptionsError(f"workload {KIND}: option scene={str(s.scene)!r}, expected "
                                   "an image file")
    im = load_rgb(s.scene)
    top, left, size = s.window_px
    if top + size > im.shape[0] or left + size > im.shape[1]:
        raise WorkloadOptionsError(f"workload {KIND}: option window_px={list(s.window_px)} does "
                                   f"not fit the scene's {im.shape[0]} x {im.shape[1]} px")
    window = im[top:top + size, left:left + size]
    p = s.patch_px
    if with_margin and s.margin_px:
        m = s.margin_px
        window, p = np.pad(window, ((m, m), (m, m), (0, 0)), mode="reflect"), p + 2 * m
    return {node: np.ascontiguousarray(window[t:t + p, lf:lf + p])
            for node, (t, lf) in zip(s.satellites, s.offsets_px, strict=True)}


def to_tensor(patch: np.ndarray):  # noqa: ANN201 -- torch is imported lazily
    """uint8 HxWx3 -> float (1, 3, H, W) in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1))).float().div(255)[None]
