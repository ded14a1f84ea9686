"""Training the small VLM: a short real run on RSVQA-LR writes weights that load and learn."""

from __future__ import annotations

from pathlib import Path

import torch

from nodes.models.vlm.data import load_samples
from nodes.models.vlm.small import SmallVLM
from nodes.models.vlm.train import TrainSettings, data_sha256, train_model


def test_short_training_run_learns_and_loads(shared_data: Path, tmp_path: Path) -> None:
    samples = load_samples(shared_data / "images", tasks=("rsvqa-lr",))
    losses: list[float] = []

    def log(line: str) -> None:
        losses.append(float(line.split(" loss ")[1].split()[0]))

    prov = train_model(samples, TrainSettings(kind="onboard", steps=101, lr=3e-3),
                       tmp_path / "m", log=log, threads=1)
    assert losses[-1] < 0.6 * losses[0]              # from ~ln(vocab) to well below
    assert prov["split"]["train_images"] < 50        # only training images were loaded
    model = SmallVLM.load(tmp_path / "m")
    gen = model.generate(torch.rand(3, 256, 256), samples[0].prompt)
    assert gen.done and gen.num_tokens >= 1
    sha = data_sha256(samples)
    assert len(sha) == 64 and sha == data_sha256(list(reversed(samples)))
