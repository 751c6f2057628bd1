"""bench-harness: compare neural-network pruning criteria on equal terms.

The host package holds the plugin API (`hookspecs`, `plugins`, `registry`), the pruning machinery the
harness owns (`pruner`, `masks`, `schedule`), data and models, the training engine, measurement, the
results store, the leaderboard and the CLI. Built-in pruners live in the separate package
`bench_harness_plugins` and arrive through the same entry points as any third-party plugin.
"""

__version__ = "0.2.0"

from bench_harness.hookspecs import hookimpl  # noqa: E402  (re-exported for plugin authors)

__all__ = ["__version__", "hookimpl"]
