"""Model selection by spec: the registered kinds, clear errors, and a registered kind loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.models.errors import ModelConfigError, ModelNotFoundError
from nodes.models.vlm import loader
from nodes.models.vlm.loader import load_vlm, parse_vlm_spec, register_vlm_kind, vlm_kinds
from nodes.models.vlm.small import SmallVLM, SmallVLMNet, preset


def test_small_model_loads_by_spec(tmp_path: Path) -> None:
    SmallVLM(SmallVLMNet(preset("onboard", ["is", "there"], ["yes", "no"]))).save(tmp_path / "m")
    model = load_vlm(f"small:{tmp_path / 'm'}")
    assert isinstance(model, SmallVLM) and model.name == "small-onboard"
    assert {"small", "hf-qwen2vl"} <= set(vlm_kinds())


def test_errors_name_the_spec_and_the_valid_kinds(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="unknown kind 'big'; choose: .*small"):
        parse_vlm_spec(f"big:{tmp_path}")
    with pytest.raises(ModelConfigError, match="expected 'kind:directory'"):
        parse_vlm_spec("small")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        parse_vlm_spec(f"small:{tmp_path / 'missing'}")
    with pytest.raises(ModelNotFoundError, match="weights.pt missing|config.json missing"):
        load_vlm(f"small:{tmp_path}")  # a folder without a model
    with pytest.raises(ModelConfigError, match="kebab-case"):
        register_vlm_kind("Big_MoE", "x:y")


def test_a_registered_kind_is_imported_only_when_loaded(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "VLM_KINDS", dict(loader.VLM_KINDS))
    SmallVLM(SmallVLMNet(preset("ground", ["is"], ["yes"]))).save(tmp_path / "g")
    register_vlm_kind("my-ground", "nodes.models.vlm.small:SmallVLM.load")
    register_vlm_kind("my-ground", "nodes.models.vlm.small:SmallVLM.load")  # same: no-op
    with pytest.raises(ModelConfigError, match="registered twice"):
        register_vlm_kind("my-ground", "other.module:load")
    assert load_vlm(f"my-ground:{tmp_path / 'g'}").name == "small-ground"
    register_vlm_kind("not-a-vlm", "pathlib:Path")
    with pytest.raises(ModelConfigError, match="returned PosixPath, expected a "
                                               "VisionLanguageModel"):
        load_vlm(f"not-a-vlm:{tmp_path}")
