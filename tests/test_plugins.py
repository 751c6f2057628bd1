"""The plugin system: discovery, clashes, near misses, filtering, and a real third-party package."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench_harness import hookimpl
from bench_harness.errors import UserError
from bench_harness.plugins import plugin_infos, register_plugin, registered_plugin, registries
from bench_harness.pruner import Pruner

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "bench-harness-movement"


def test_builtins_arrive_through_the_entry_point_group():
    found = registries()
    assert {"none", "magnitude", "random", "taylor", "contribution"} <= set(found.pruners.names())
    assert {"mnist", "cifar10", "fashion-mnist", "synthetic"} <= set(found.datasets.names())
    assert {"fcnn", "cnn"} <= set(found.models.names())
    magnitude = found.pruners.entry("magnitude")
    assert "bench_harness_plugins.magnitude" in magnitude.source and "bench-harness" in magnitude.source
    assert any(info.name == "magnitude" and info.distribution == "bench-harness" for info in plugin_infos())


def test_a_second_pruner_under_a_taken_name_names_both_sources():
    class Impostor(Pruner):
        name = "magnitude"

    class ImpostorPlugin:
        __name__ = "impostor_plugin"

        @hookimpl
        def register_pruners(self, register):
            register(Impostor)

    with registered_plugin(ImpostorPlugin(), "impostor"):
        with pytest.raises(UserError) as caught:
            registries()
        message = str(caught.value)
        assert "'magnitude'" in message and "bench_harness_plugins.magnitude" in message and "impostor" in message
    assert "magnitude" in registries().pruners  # healthy again once the clash is gone


def test_an_unknown_name_gets_a_did_you_mean():
    with pytest.raises(UserError, match="Did you mean 'magnitude'"):
        registries().pruners.get("magnitde")


def test_registering_something_that_is_not_a_pruner_is_refused():
    class Confused:
        __name__ = "confused_plugin"

        @hookimpl
        def register_pruners(self, register):
            register(object)

    with registered_plugin(Confused(), "confused"):
        with pytest.raises(UserError, match="confused_plugin registered something unusable.*not a subclass of bench_harness.pruner.Pruner"):
            registries()


def run_cli(*args, env_extra=None, cwd=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "bench_harness.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_plugin_filter_environment_variable_limits_what_loads():
    result = run_cli("list", env_extra={"BENCH_HARNESS_PLUGINS": "datasets,models,magnitude"})
    assert result.returncode == 0, result.stderr
    assert "magnitude" in result.stdout and "contribution" not in result.stdout


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    """The README's third-party package, installed with pip into a folder put on PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(EXAMPLE)],
        check=True, timeout=300,
    )
    return {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}


def test_the_example_package_is_listed_with_its_package_and_version(installed_example):
    result = run_cli("list", env_extra=installed_example)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("movement"))
    assert "bench-harness-movement 0.1.0" in line and "connections" in line


def test_a_run_uses_the_example_pruner(installed_example, tmp_path):
    result = run_cli(
        "run", "--pruner", "movement", "--dataset", "synthetic", "--seeds", "1", "--epochs", "3", "--prune-every", "1",
        "--prune-rate", "0.5", "--device", "cpu", "--results", str(tmp_path), env_extra=installed_example,
    )
    assert result.returncode == 0, result.stderr
    (record_path,) = (tmp_path / "runs").glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["pruner"] == "movement" and record["status"] == "ok"
    assert record["metrics"]["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert record["plugins"]["pruner"]["distribution"] == "bench-harness-movement"
    assert record["plugins"]["pruner"]["version"] == "0.1.0" and record["dense_reference"] is False


def test_the_example_packages_own_test_passes_with_the_kit(installed_example):
    tests = EXAMPLE / "tests"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)], capture_output=True, text=True,
        env=dict(os.environ, **installed_example), cwd=tests, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout


def test_the_readme_shows_the_example_package_verbatim():
    readme = (REPO / "README.md").read_text()
    for name in ("pyproject.toml", "bench_harness_movement.py"):
        assert (EXAMPLE / name).read_text().strip() in readme, f"README's copy of {name} is out of date"


def test_a_misspelt_hook_is_refused_instead_of_silently_ignored():
    class Misspelt:
        __name__ = "misspelt_plugin"

        @hookimpl
        def register_prunerz(self, register):
            pass

    with pytest.raises(UserError, match="register_prunerz"):
        register_plugin(Misspelt(), "misspelt")
    assert "misspelt" not in {info.name for info in plugin_infos()}


def test_every_hook_has_a_section_in_the_readme_and_a_builtin_user():
    from bench_harness import hookspecs
    from bench_harness.plugins import load_plugins, pm

    load_plugins()
    readme = (REPO / "README.md").read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith("register_")]
    assert hooks, "no hooks found"
    for hook in hooks:
        assert f"`{hook}`" in readme or f"{hook}(" in readme, f"the README does not document {hook}"
        assert getattr(pm.hook, hook).get_hookimpls(), f"no built-in plugin implements {hook}"
