"""The losses' input checks: shapes every call, value checks (a device sync) on a schedule."""

from __future__ import annotations

import pytest
import torch

from memvir_pl.losses import NormSoftmax
from memvir_pl.losses import base as loss_base

C, D, B = 5, 4, 6


def _inputs(bad_label: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(B) % C
    if bad_label:
        labels[2] = C
    return torch.randn(B, D), labels


def checked_calls(monkeypatch, loss, calls: int) -> list[int]:
    """Indices of the calls (0-based) on which the value checks ran."""
    seen: list[int] = []
    current = {"call": 0}
    real = loss_base.check_values
    monkeypatch.setattr(loss_base, "check_values", lambda *a: (seen.append(current["call"]), real(*a)))
    for call in range(calls):
        current["call"] = call
        loss(*_inputs())
    return seen


def test_value_checks_run_on_the_first_calls_then_every_check_every_th(monkeypatch):
    loss = NormSoftmax(C, D)
    assert loss.check_every == 100
    first = list(range(loss_base.FIRST_CHECKED_CALLS))
    assert checked_calls(monkeypatch, loss, 250) == first + [100, 200]


def test_check_every_one_checks_every_call_and_check_inputs_false_none(monkeypatch):
    loss = NormSoftmax(C, D)
    loss.check_every = 1
    assert checked_calls(monkeypatch, loss, 30) == list(range(30))
    loss.check_inputs = False
    assert checked_calls(monkeypatch, loss, 30) == []


def test_a_bad_label_on_the_first_call_raises_the_clear_error():
    with pytest.raises(ValueError, match=r"NormSoftmax: labels must lie in \[0, 5\).*got 5"):
        NormSoftmax(C, D)(*_inputs(bad_label=True))


def test_shapes_are_checked_on_every_call():
    loss = NormSoftmax(C, D)
    for _ in range(50):  # past the first checked calls: the value checks are not due
        loss(*_inputs())
    with pytest.raises(ValueError, match=r"embeddings must have shape \(batch, 4\), got \(6, 5\)"):
        loss(torch.randn(B, D + 1), torch.arange(B) % C)


def test_one_host_read_finds_both_bad_labels_and_nan():
    x, labels = _inputs()
    x[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"NaN or Inf \(1 values\)"):
        loss_base.check_values("L", x, labels, C)
    with pytest.raises(ValueError, match=r"got -1"):
        loss_base.check_values("L", x, labels - 1, C)
    loss_base.check_values("L", torch.full((B, D), 3e38), labels, C)  # finite values whose sum overflows


def test_bad_check_every_is_refused():
    loss = NormSoftmax(C, D)
    loss.check_every = 0
    with pytest.raises(ValueError, match="check_every must be an integer >= 1"):
        loss(*_inputs())
