"""The package's own test: the harness's kit checks the pruner against the whole contract."""

from bench_harness.testing import check_pruner
from bench_harness_movement import MovementPruner


def test_movement_keeps_the_pruner_contract():
    check_pruner(MovementPruner)
