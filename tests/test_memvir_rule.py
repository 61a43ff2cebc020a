"""MemVir's rule (the paper's curriculum of virtual classes) against a reference written the most direct way."""

from __future__ import annotations

import copy

import pytest

from memvir_pl import MemVirCallback
from tests.memvir_helpers import (
    CosineSoftmax,
    LinearEmbedder,
    assert_same_steps,
    fixed_data,
    quiet_trainer,
    reference_run,
)

N, M, U = 3, 4, 1
B, D, C, IN_DIM = 8, 6, 5, 10
STEPS_PER_EPOCH, EPOCHS = 100, 3


@pytest.mark.parametrize("accumulate", [1, 2])
def test_rule_matches_direct_reference_for_300_steps(accumulate):
    data = fixed_data(STEPS_PER_EPOCH, B, IN_DIM, C)
    model = LinearEmbedder(CosineSoftmax(C, D), IN_DIM, data, B)
    reference_model = copy.deepcopy(model)
    expected = reference_run(reference_model, N, M, U, EPOCHS, STEPS_PER_EPOCH, accumulate)

    callback = MemVirCallback(num_steps=N, step_gap=M, warmup_epochs=U)
    trainer = quiet_trainer(max_epochs=EPOCHS, callbacks=[callback], accumulate_grad_batches=accumulate)
    trainer.fit(model)
    got = model.loss.calls

    assert len(got) == EPOCHS * STEPS_PER_EPOCH
    assert_same_steps(got, expected)
    blocks_seen = [e["num_classes"] // C - 1 for e in expected]
    # the curriculum: nothing in warm-up, a new block every M+1 steps, then N blocks
    first = STEPS_PER_EPOCH
    assert blocks_seen[:first] == [0] * first
    assert blocks_seen[first:first + 5] == [0] * 5 and blocks_seen[first + 5] == 1
    assert blocks_seen[first + 10] == 2 and blocks_seen[first + 15] == 3 and max(blocks_seen) == N
    assert callback.memory.filled == N * (M + 1)
