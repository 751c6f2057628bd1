"""Every plugin example in the README's "Write your own pruner" section runs and keeps the contract."""

import re
from pathlib import Path

import pytest

from bench_harness.pruner import Pruner
from bench_harness.testing import check_pruner

README = Path(__file__).resolve().parent.parent / "README.md"


def plugin_examples():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Write your own pruner") : text.index("## Layout")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_the_section_has_an_example_for_every_capability():
    code = "\n".join(plugin_examples())
    for capability in ("def observe", "wants_inputs", "def compensate", "def grow_scores", "wants_dense_gradients", "def after_prune"):
        assert capability in code, capability


@pytest.mark.parametrize("index", range(len(plugin_examples())))
def test_each_example_defines_a_pruner_that_keeps_the_contract(index):
    namespace = {"__name__": f"readme_example_{index}"}
    exec(compile(plugin_examples()[index], f"README example {index}", "exec"), namespace)
    pruners = [value for value in namespace.values() if isinstance(value, type) and issubclass(value, Pruner) and value is not Pruner]
    assert len(pruners) == 1 and callable(namespace["register_pruners"])
    check_pruner(pruners[0])
