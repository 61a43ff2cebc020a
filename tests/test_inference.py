"""The inference room: input settings, the one evaluation loop, and a model rebuilt from a checkpoint alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from memvir_pl.data.transforms import input_settings
from memvir_pl.inference import embed_batches, evaluate, update_metric
from memvir_pl.metrics import RetrievalMetrics


@pytest.mark.parametrize("dataset, preset, size, expected", [
    ("glyphs", None, None, ("glyph", 32)),
    ("cars", None, None, ("bninception", 224)),
    ("emoji", "efficientnet", 128, ("efficientnet", 128)),
    ("cub", "imagenet", None, ("imagenet", 224)),
])
def test_input_settings_fill_the_defaults(dataset, preset, size, expected):
    assert input_settings(dataset, preset, size) == expected


@pytest.mark.parametrize("dataset, preset", [("glyphs", "imagenet"), ("cars", "glyph")])
def test_input_settings_refuse_a_preset_that_does_not_fit_the_data(dataset, preset):
    with pytest.raises(ValueError, match=f"transform preset '{preset}' does not fit dataset '{dataset}'"):
        input_settings(dataset, preset)


def toy_batches() -> list[dict[str, torch.Tensor]]:
    """Four 2-D points in two batches. Worked by hand (cosine): (1, 0) and (0.9, 0.1) of class 0
    are each other's nearest; (0, 1) of class 1 finds (0.8, 0.2) of class 1; (0.8, 0.2) finds
    (0.9, 0.1) of class 0: Recall@1 = 3/4."""
    points = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.8, 0.2]])
    labels = torch.tensor([0, 0, 1, 1])
    return [{"image": points[i:i + 2], "label": labels[i:i + 2], "index": torch.arange(i, i + 2)} for i in (0, 2)]


def test_evaluate_gives_the_hand_worked_recall_and_resets_the_metric_first():
    metric = RetrievalMetrics(k=(1,), backend="torch")
    update_metric(metric, torch.randn(5, 2), {"label": torch.zeros(5, dtype=torch.long), "index": torch.arange(5)})
    moved = []

    def to_device(batch):
        moved.append(len(batch["label"]))
        return batch

    values = evaluate(lambda x: F.normalize(x, dim=1), toy_batches(), metric, to_device=to_device)
    assert float(values["recall@1"]) == pytest.approx(0.75)
    assert moved == [2, 2]


def test_evaluate_runs_without_autograd():
    layer = torch.nn.Linear(2, 2)
    seen = []

    def embed(x):
        out = F.normalize(layer(x), dim=1)
        seen.append(out.requires_grad)
        return out

    evaluate(embed, toy_batches(), RetrievalMetrics(k=(1,), backend="torch"))
    assert seen == [False, False]


def test_embed_batches_keeps_the_order_and_refuses_nothing_to_embed():
    embeddings, labels = embed_batches(torch.nn.Identity(), toy_batches())
    assert torch.equal(embeddings, torch.cat([b["image"] for b in toy_batches()]))
    assert labels.tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="got no batches"):
        embed_batches(torch.nn.Identity(), [])
