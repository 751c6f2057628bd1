"""The plugin API: every hook a bench-harness plugin may implement.

Hooks are called with keyword arguments only, so an implementation may accept fewer arguments than
the specification lists (pluggy passes only those it names); that lets the specs grow without
breaking existing plugins.
"""

from __future__ import annotations

from typing import Callable

import pluggy

PROJECT_NAME = "bench_harness"
"""The pluggy project name, which is also the entry-point group plugins register under."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_pruners(register: Callable) -> None:
    """Register pruning criteria.

    :param register: call ``register(pruner_class)`` once per pruner; the class subclasses
        :class:`bench_harness.pruner.Pruner` and names itself with its ``name`` attribute.
    """


@hookspec
def register_datasets(register: Callable) -> None:
    """Register datasets.

    :param register: call ``register(spec)`` once per dataset with a
        :class:`bench_harness.data.DatasetSpec`.
    """


@hookspec
def register_models(register: Callable) -> None:
    """Register model architectures.

    :param register: call ``register(spec)`` once per model with a
        :class:`bench_harness.models.ModelSpec`.
    """
