"""A kit for plugin authors: check a pruner class against the harness's contract.

``check_pruner(MyPruner)`` trains two tiny models (a fully-connected chain and a small CNN) on
random data through the real training engine and pruning event, for every granularity the pruner
declares, under the ``layer`` and ``global`` allocations, and raises
:class:`PrunerContractError` (an ``AssertionError``, so pytest shows it as a failed test) naming the
first broken promise:

* ``score`` returns a floating tensor of the right shape (weight-shaped for connections, one value
  per unit for neurons) without NaN, and calling it twice gives the same answer;
* ``observe`` does no host synchronisation (no ``.item()``, ``bool(tensor)``, ``.tolist()``,
  ``.cpu()``, ``nonzero``, boolean indexing, ...) when the pruner says it is ``capturable``, and
  never changes a weight;
* after each event, every layer holds exactly the alive count the schedule and allocation ask for
  (regrowth included), pruned weights are zero, and weights outside the dropped set are untouched
  by anything but the pruner's own ``compensate``;
* ``grow_scores`` (pruners that regrow) returns a weight-shaped floating tensor;
* a fixed seed gives bit-identical masks and weights when the whole check is repeated;
* checkpointed after an epoch (``state_dict``, through the bytes of a real checkpoint) and restored
  into a fresh instance (``load_state_dict``, which must copy into the pruner's own tensors, not
  replace them), the run ends bit for bit as it does without the interruption.

Use it in a plugin's own tests::

    from bench_harness.testing import check_pruner

    def test_my_pruner_keeps_the_contract():
        check_pruner(MyPruner)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode

from bench_harness import checkpoint
from bench_harness.allocation import erk_densities, round_half_up
from bench_harness.engine import Normaliser, ResidentSplit, Trainer, make_optimizer
from bench_harness.event import domain
from bench_harness.masks import MaskSet
from bench_harness.models import build_cnn, build_fcnn
from bench_harness.pruner import GRANULARITIES, Pruner, PruningContext, find_prunable_layers, state_tensors, validate_pruner_class
from bench_harness.schedule import PruningSchedule

__all__ = ["PrunerContractError", "check_pruner"]


class PrunerContractError(AssertionError):
    """A pruner broke a promise of the contract; the message says which and where."""


_SYNCHRONISING = frozenset({
    "item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "nonzero", "argwhere",
    "masked_select", "unique", "unique_consecutive",
})
"""Tensor operations that wait for the device (their result, or its size, depends on the values)."""


class _NoHostSync(TorchFunctionMode):
    """Refuses operations that would force a GPU to finish its queue inside a captured step."""

    def __init__(self, pruner_name: str) -> None:
        super().__init__()
        self.pruner_name = pruner_name

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        index = args[1] if len(args) > 1 and name in ("__getitem__", "__setitem__") else None
        if name in _SYNCHRONISING or (torch.is_tensor(index) and index.dtype == torch.bool):
            what = "boolean indexing" if index is not None else name
            raise PrunerContractError(
                f"Pruner '{self.pruner_name}' calls {what} in observe(), which waits for the device and cannot be "
                "captured in a CUDA graph; keep observe() to in-place tensor work, or set capturable = False."
            )
        return func(*args, **(kwargs or {}))


@dataclass
class _Setting:
    granularity: str
    scope: str
    model: str


def _tiny_model(kind: str) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    if kind == "fcnn":
        return build_fcnn((1, 6, 6), 4, hidden=(12, 8)), (1, 6, 6)
    return build_cnn((3, 8, 8), 4, channels=(4, 6)), (3, 8, 8)


def _random_split(shape: tuple[int, int, int], count: int, generator: torch.Generator) -> ResidentSplit:
    images = torch.randint(0, 256, (count, *shape), generator=generator, dtype=torch.uint8)
    return ResidentSplit(images, torch.randint(0, 4, (count,), generator=generator))


def _expected_alive(scope: str, counts_before: dict[str, int], sizes: dict[str, int], shapes: dict, density: float | None) -> dict[str, int] | int:
    """The per-layer (layer, erk, or a regrow-only event) or total (global, lamp) alive count an event must leave."""
    if density is None:
        return counts_before
    if scope == "layer":
        return {name: max(1, round_half_up(density * size)) for name, size in sizes.items()}
    if scope == "erk":
        densities = erk_densities(shapes, density)
        return {name: max(1, round_half_up(densities[name] * size)) for name, size in sizes.items()}
    return round_half_up(density * sum(sizes.values()))


def _domain_counts(masks: MaskSet, layers, granularity: str) -> dict[str, int]:
    counts = masks.alive_weight_counts() if granularity == "connections" else masks.alive_unit_counts()
    return {layer.name: counts[layer.name] for layer in domain(layers, granularity)}


@dataclass
class _Built:
    """One tiny run, built and ready to train."""

    model: torch.nn.Module
    layers: list
    masks: MaskSet
    pruner: Pruner
    trainer: Trainer
    deltas: dict


def _build(pruner_class: type[Pruner], setting: _Setting, seed: int, schedule: PruningSchedule, where: str, init_seed: int) -> _Built:
    torch.manual_seed(init_seed)
    model, shape = _tiny_model(setting.model)
    layers = find_prunable_layers(model)
    optimizer = make_optimizer(model, 0.01, torch.device("cpu"))
    masks = MaskSet(layers)
    device = torch.device("cpu")
    context = PruningContext(model, layers, optimizer, seed, device, setting.granularity, batch_size=8)
    pruner = pruner_class(context)
    channels = shape[0]
    trainer = Trainer(
        model, optimizer, layers, masks, pruner, schedule, Normaliser((0.5,) * channels, (0.25,) * channels, device),
        batch_size=8, seed=seed, device=device, granularity=setting.granularity, scope=setting.scope,
    )
    _guard_observe(pruner, model, where)
    return _Built(model, layers, masks, pruner, trainer, _record_compensation(pruner))


def _restored(pruner_class: type[Pruner], setting: _Setting, seed: int, schedule: PruningSchedule, where: str, run: _Built) -> _Built:
    """Checkpoint ``run`` as the harness does (through the bytes of a real checkpoint), restore it
    into a fresh instance built from another initialisation, and return the fresh run."""
    name = pruner_class.name
    try:
        data = checkpoint.dumps(run.trainer.state_dict(), {})
    except Exception as exc:  # noqa: BLE001 - whatever the pruner's state_dict() raised, said as a broken promise
        raise PrunerContractError(f"Pruner '{name}' state_dict() failed {where}: {type(exc).__name__}: {exc}.") from exc
    run.trainer.close()
    fresh = _build(pruner_class, setting, seed, schedule, where, init_seed=seed + 1)
    in_place = state_tensors(fresh.pruner)
    try:
        fresh.trainer.load_state_dict(checkpoint.loads(data, {})[0])
    except Exception as exc:  # noqa: BLE001
        raise PrunerContractError(
            f"Pruner '{name}' could not be restored from its own state_dict() {where}: {type(exc).__name__}: {exc}; "
            "override state_dict() and load_state_dict() together."
        ) from exc
    moved = [path for path, storage in in_place.items() if state_tensors(fresh.pruner).get(path) != storage]
    if moved:
        raise PrunerContractError(
            f"Pruner '{name}' load_state_dict() replaced {', '.join(moved)} instead of copying into it {where}; restore "
            "tensors in place (tensor.copy_(saved)): a captured CUDA graph keeps pointing at the old ones."
        )
    return fresh


def _run(pruner_class: type[Pruner], setting: _Setting, seed: int, resume_after: int | None = None) -> dict[str, torch.Tensor]:
    """Train, prune twice, check everything on the way; return the final masks and weights.

    With ``resume_after``, the run is checkpointed after that epoch's training (before its event,
    so the pruner's statistics are in full use) and continues in a fresh instance restored from it.
    """
    regrows = pruner_class.regrows() and setting.granularity == "connections"
    # Events after epochs 1 and 3; a pruner that regrows also swaps after epoch 2.
    schedule = PruningSchedule.build(
        epochs=5, prune_every=2, rate=0.4, kind="fixed", regrow_fraction=0.3 if regrows else 0.0, regrow_every=1, start=1, end=3,
    )
    generator = torch.Generator().manual_seed(seed)
    shape = _tiny_model(setting.model)[1]
    train, val = _random_split(shape, 36, generator), _random_split(shape, 16, generator)
    where = f"(granularity {setting.granularity}, scope {setting.scope}, model {setting.model})"
    run = _build(pruner_class, setting, seed, schedule, where, init_seed=seed)
    try:
        for epoch in range(1, 4):
            run.trainer.train_epoch(train)
            run.trainer.epochs_done = epoch  # as fit_together counts them (which epochs observe depends on it)
            if epoch == resume_after:
                run = _restored(pruner_class, setting, seed, schedule, where, run)
            plan = schedule.event_after(epoch)
            if plan is None:
                continue
            pruner, masks, layers = run.pruner, run.masks, run.layers
            _check_scores(pruner, layers, setting.granularity, where)
            before = {layer.name: (layer.weight.detach().clone(), masks.weight[layer.name].bool()) for layer in layers}
            counts_before = _domain_counts(masks, layers, setting.granularity)
            run.deltas.clear()
            try:
                run.trainer.prune(plan, val)
            except (TypeError, ValueError) as exc:  # the event's own checks of the pruner's answers
                raise PrunerContractError(f"{exc} {where}") from exc
            _check_event(pruner, masks, layers, setting, plan, before, counts_before, run.deltas, where)
    finally:
        run.trainer.close()
    state = {f"mask:{key}": value.clone() for key, value in run.masks.weight.items()}
    state.update({f"weight:{layer.name}": layer.weight.detach().clone() for layer in run.layers})
    return state


def _guard_observe(pruner: Pruner, model: torch.nn.Module, where: str) -> None:
    """Wrap the instance's observe(): no host synchronisation (if capturable), no weight or gradient changes."""
    observe = pruner.observe

    def checked(step):
        before = [param.detach().clone() for param in model.parameters()]
        gradients = [None if param.grad is None else param.grad.clone() for param in model.parameters()]
        if pruner.capturable:
            with _NoHostSync(pruner.name):
                observe(step)
        else:
            observe(step)
        for param, old in zip(model.parameters(), before):
            if not torch.equal(param.detach(), old):
                raise PrunerContractError(f"Pruner '{pruner.name}' changed a weight in observe() {where}; only compensate() may change weights.")
        for param, old in zip(model.parameters(), gradients):
            if old is not None and not torch.equal(param.grad, old):
                raise PrunerContractError(
                    f"Pruner '{pruner.name}' changed a gradient in observe() {where}; the optimizer steps with them, so observe() must only read them."
                )

    pruner.observe = checked


def _record_compensation(pruner: Pruner) -> dict:
    """Wrap the instance's compensate() to remember what it asked for, layer by layer."""
    deltas: dict = {}
    if not pruner.compensates():
        return deltas
    compensate = pruner.compensate

    def recorded(layer, cut):
        delta = compensate(layer, cut)
        deltas[layer.name] = None if delta is None else delta.detach().clone()
        return delta

    pruner.compensate = recorded
    return deltas


def _check_answer(pruner: Pruner, what: str, layer, value, expected: tuple, where: str) -> None:
    if not torch.is_tensor(value) or tuple(value.shape) != expected:
        got = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
        raise PrunerContractError(f"Pruner '{pruner.name}' returned {what} {got} for layer {layer.name} {where}, expected shape {expected}.")
    if not value.is_floating_point():
        raise PrunerContractError(f"Pruner '{pruner.name}' returned {what} of dtype {value.dtype} for layer {layer.name} {where}; use a floating dtype.")
    if bool(torch.isnan(value).any()):
        raise PrunerContractError(f"Pruner '{pruner.name}' returned {what} with NaN for layer {layer.name} {where}.")
    if value.device != layer.weight.device:
        raise PrunerContractError(f"Pruner '{pruner.name}' returned {what} on {value.device} for layer {layer.name} {where}, not the weight's device.")


def _check_scores(pruner: Pruner, layers, granularity: str, where: str) -> None:
    for layer in domain(layers, granularity):
        expected = tuple(layer.weight.shape) if granularity == "connections" else (layer.units,)
        first = pruner.score(layer, granularity)
        _check_answer(pruner, "scores", layer, first, expected, where)
        if not torch.equal(first, pruner.score(layer, granularity)):
            raise PrunerContractError(f"Pruner '{pruner.name}' returned different scores for layer {layer.name} when asked twice {where}; score() must not change state.")
        if granularity == "connections" and pruner.regrows():
            _check_answer(pruner, "grow scores", layer, pruner.grow_scores(layer), tuple(layer.weight.shape), where)


def _check_event(pruner, masks, layers, setting, plan, before, counts_before, deltas, where) -> None:
    scored = domain(layers, setting.granularity)
    sizes = {layer.name: layer.weight.numel() if setting.granularity == "connections" else layer.units for layer in scored}
    shapes = {layer.name: tuple(layer.weight.shape) for layer in scored}
    expected = _expected_alive(setting.scope, counts_before, sizes, shapes, plan.density)
    counts = _domain_counts(masks, layers, setting.granularity)
    actual = counts if isinstance(expected, dict) else sum(counts.values())
    if actual != expected:
        raise PrunerContractError(f"After the {plan.kind} event after epoch {plan.epoch} {where}, alive counts are {actual}; the schedule asks for {expected}.")
    regrows = pruner.regrows() and setting.granularity == "connections"
    for layer in layers:
        weight_before, mask_before = before[layer.name]
        mask = masks.weight[layer.name].bool()
        weight = layer.weight.detach()
        if bool(weight[~mask].ne(0).any()):
            raise PrunerContractError(f"A pruned weight of layer {layer.name} is not zero after the event {where}.")
        expected_weight = weight_before.clone()
        if deltas.get(layer.name) is not None:
            expected_weight += deltas[layer.name] * masks.weight[layer.name]
        kept = mask_before & mask  # alive before and after: only compensate() may have moved them
        unchanged = weight[kept] == expected_weight[kept]
        if regrows:  # a connection dropped and regrown by the same event restarts at zero
            unchanged |= weight[kept] == 0
        if not bool(unchanged.all()):
            raise PrunerContractError(
                f"Weights of layer {layer.name} that the event kept were changed by something other than compensate() {where}."
            )


def check_pruner(pruner_class: type[Pruner], granularities: tuple[str, ...] | None = None, seed: int = 0) -> None:
    """Check a pruner class against the contract; raise :class:`PrunerContractError` on the first breach.

    ``granularities`` limits the check (default: every granularity the class declares). For each,
    it trains the fully-connected model under ``layer`` allocation (twice, to check determinism) and
    the CNN under ``global`` allocation; a few seconds on a CPU.
    """
    try:
        validate_pruner_class(pruner_class)
    except TypeError as exc:
        raise PrunerContractError(str(exc)) from None
    if not pruner_class.prunes:
        return
    chosen = tuple(granularities or pruner_class.granularities)
    unknown = [g for g in chosen if g not in GRANULARITIES or g not in pruner_class.granularities]
    if unknown:
        raise PrunerContractError(f"Pruner '{pruner_class.name}' does not declare granularities {unknown}.")
    for granularity in chosen:
        # Both allocations and both layer types, and a repeat of the first setting for determinism.
        settings = (_Setting(granularity, "layer", "fcnn"), _Setting(granularity, "global", "cnn"))
        outcomes = [_run(pruner_class, setting, seed) for setting in settings]
        repeat = _run(pruner_class, settings[0], seed)
        for key, value in outcomes[0].items():
            if not torch.equal(value, repeat[key]):
                raise PrunerContractError(
                    f"Pruner '{pruner_class.name}' is not deterministic for a fixed seed: {key} differs between two identical "
                    f"runs (granularity {granularity}, scope layer, model fcnn); draw randomness from context.seed."
                )
        resumed = _run(pruner_class, settings[0], seed, resume_after=1)
        for key, value in outcomes[0].items():
            if not torch.equal(value, resumed[key]):
                raise PrunerContractError(
                    f"Pruner '{pruner_class.name}' does not resume exactly: restored from its state_dict() after epoch 1 into a "
                    f"fresh instance, the run ends with another {key} than without the interruption (granularity "
                    f"{granularity}, scope layer, model fcnn); override state_dict() and load_state_dict() to save the state "
                    "kept outside tensors, generators and bench_harness.statistics accumulators."
                )
