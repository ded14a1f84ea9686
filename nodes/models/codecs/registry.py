"""CompressAI architectures by kebab name, built offline (pretrained=False) with small channels.

Why a registry of our own: CompressAI's zoo fixes the channel counts per quality level (192..320),
far too large to train on a CPU; here every architecture is built with the channel counts the
caller asks for (CI uses N=M=32..64), and the name is the key of the trained-weights cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nodes.models.codecs.errors import CodecInputError, UnknownCodecError


@dataclass(frozen=True)
class CodecSpec:
    """One architecture: how to build it and what DLRC needs to know about its entropy model."""

    name: str
    build: Callable[[int, int], object]  # (N, M) -> compressai CompressionModel
    context: str  # "hyperprior" (none), "raster" (masked 5x5), "checkerboard-groups" (ELIC)
    dlrc: bool  # supported by nodes.dlrc's filter and reconstructor
    paper: str

    @property
    def autoregressive(self) -> bool:
        """The latent is decoded in an order where later vectors depend on earlier ones."""
        return self.context != "hyperprior"


def _bmshj(n: int, m: int) -> object:
    from compressai.models import ScaleHyperprior

    return ScaleHyperprior(N=n, M=m)


def _mbt(n: int, m: int) -> object:
    from compressai.models import JointAutoregressiveHierarchicalPriors

    return JointAutoregressiveHierarchicalPriors(N=n, M=m)


def _cheng_attn(n: int, m: int) -> object:
    from compressai.models import Cheng2020Attention

    if n != m:
        raise CodecInputError(f"cheng2020-attn: N={n} and M={m}; expected N == M (one width)")
    return Cheng2020Attention(N=n)


def elic_groups(m: int) -> list[int]:
    """ELIC's uneven channel groups: the paper's 16, 16, 32, 64, M-128 from M = 160 on; for
    the small latents trained here the same ramp in proportion, M/8, M/8, M/4, M/2."""
    if m >= 160:
        return [16, 16, 32, 64, m - 128]
    if m % 8:
        raise CodecInputError(
            f"elic2022: M={m}; expected M >= 160 or a multiple of 8 (groups M/8, M/8, M/4, M/2)")
    return [m // 8, m // 8, m // 4, m // 2]


def _elic(n: int, m: int) -> object:
    from compressai.models import Elic2022Official

    model = Elic2022Official(N=n, M=m, groups=elic_groups(m))
    model.M = m  # CompressAI's ELIC does not record it; DLRC and the stores read it
    return model


SPECS: dict[str, CodecSpec] = {
    spec.name: spec
    for spec in (
        CodecSpec("bmshj2018-hyperprior", _bmshj, context="hyperprior", dlrc=True,
                  paper="Balle et al., ICLR 2018 (scale hyperprior)"),
        CodecSpec("mbt2018", _mbt, context="raster", dlrc=True,
                  paper="Minnen et al., NeurIPS 2018 (joint autoregressive + hyperprior)"),
        CodecSpec("cheng2020-attn", _cheng_attn, context="raster", dlrc=True,
                  paper="Cheng et al., CVPR 2020 (attention, GMM replaced by Gaussian)"),
        CodecSpec("elic2022-official", _elic, context="checkerboard-groups", dlrc=True,
                  paper="He et al., CVPR 2022 (checkerboard + uneven channel groups)"),
    )
}


def codec_names() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(SPECS)


def codec_spec(name: str) -> CodecSpec:
    """The spec of `name`; UnknownCodecError lists the valid names."""
    try:
        return SPECS[name]
    except KeyError:
        raise UnknownCodecError(name, list(SPECS)) from None


def build_codec(name: str, n: int = 64, m: int = 64) -> object:
    """A fresh, untrained CompressAI model of architecture `name` with N=n, M=m channels."""
    spec = codec_spec(name)
    if n < 8 or m < 8:
        raise CodecInputError(f"{name}: channels N={n}, M={m}; expected >= 8")
    return spec.build(n, m)
