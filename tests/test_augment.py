"""On-device augmentation: the crop and flip are what they claim, and depend on the seed only."""

import torch
from typer.testing import CliRunner

from bench_harness.augment import AugmentationDraw, RandomCropFlip
from bench_harness.cli import app


def batch():
    return torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)


def draw(rows, columns, flip):
    return AugmentationDraw(torch.tensor(rows), torch.tensor(columns), torch.tensor(flip))


def test_the_centre_crop_without_flip_is_the_identity():
    augment = RandomCropFlip(seed=0, device=torch.device("cpu"), padding=2)
    images = batch()
    assert torch.equal(augment(images, draw([2, 2], [2, 2], [False, False])), images)


def test_flip_mirrors_and_shift_moves_pixels_in_from_zero_padding():
    augment = RandomCropFlip(seed=0, device=torch.device("cpu"), padding=2)
    images = batch()
    flipped = augment(images, draw([2, 2], [2, 2], [True, False]))
    assert torch.equal(flipped[0], images[0].flip(-1)) and torch.equal(flipped[1], images[1])
    shifted = augment(images, draw([0, 2], [2, 4], [False, False]))
    assert torch.equal(shifted[0, :, 2:, :], images[0, :, :3, :]) and (shifted[0, :, :2, :] == 0).all()  # moved down by 2
    assert torch.equal(shifted[1, :, :, :3], images[1, :, :, 2:]) and (shifted[1, :, :, 3:] == 0).all()  # moved left by 2


def test_draws_depend_on_the_seed_only():
    first = RandomCropFlip(seed=5, device=torch.device("cpu")).draw(100)
    again = RandomCropFlip(seed=5, device=torch.device("cpu")).draw(100)
    other = RandomCropFlip(seed=6, device=torch.device("cpu")).draw(100)
    assert torch.equal(first.shift_rows, again.shift_rows) and torch.equal(first.flip, again.flip)
    assert not torch.equal(first.shift_rows, other.shift_rows)
    assert first.shift_rows.min() >= 0 and first.shift_rows.max() <= 8


def test_augmented_runs_train_and_repeat_exactly(tmp_path):
    runner = CliRunner()
    args = ["run", "--pruner", "magnitude", "--dataset", "synthetic", "--model", "cnn", "--seeds", "1", "--epochs", "2",
            "--prune-every", "1", "--augment", "--device", "cpu"]
    results = []
    for folder in ("a", "b"):
        outcome = runner.invoke(app, [*args, "--results", str(tmp_path / folder)])
        assert outcome.exit_code == 0, outcome.output
        (path,) = (tmp_path / folder / "runs").glob("*.json")
        results.append(path.read_text())
    import json

    first, second = (json.loads(text) for text in results)
    assert first["config"]["augment"] is True
    assert first["metrics"]["test_accuracy"] == second["metrics"]["test_accuracy"]
    assert [h["train_loss"] for h in first["history"]] == [h["train_loss"] for h in second["history"]]
