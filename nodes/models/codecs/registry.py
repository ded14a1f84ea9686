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
    autoregressive: bool  # a masked-conv context model (raster-order decoding)
    dlrc: bool  # supported by nodes.dlrc's filter and reconstructor
    paper: str


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


def _elic(n: int, m: int) -> object:
    from compressai.models import Elic2022Official

    if m < 160:
        raise CodecInputError(
            f"elic2022: M={m}; expected M >= 160 (channel groups 16,16,32,64,M-128)")
    return Elic2022Official(N=n, M=m)


SPECS: dict[str, CodecSpec] = {
    spec.name: spec
    for spec in (
        CodecSpec("bmshj2018-hyperprior", _bmshj, autoregressive=False, dlrc=True,
                  paper="Balle et al., ICLR 2018 (scale hyperprior)"),
        CodecSpec("mbt2018", _mbt, autoregressive=True, dlrc=True,
                  paper="Minnen et al., NeurIPS 2018 (joint autoregressive + hyperprior)"),
        CodecSpec("cheng2020-attn", _cheng_attn, autoregressive=True, dlrc=True,
                  paper="Cheng et al., CVPR 2020 (attention, GMM replaced by Gaussian)"),
        CodecSpec("elic2022-official", _elic, autoregressive=True, dlrc=False,
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
