"""The pruner contract: what a pruning criterion may do, and the views it gets.

A pruner *scores*: for each prunable layer it returns one number per connection (a tensor shaped
like the weight) or per neuron (one per output unit); lower means "remove first". The harness owns
the pruning event (``bench_harness.event``): the schedule says how many elements stay, the
allocation (``--scope``) how they are shared between layers, and the masks are the harness's. Three
optional capabilities let a method do more than rank, still on equal terms with every other one:

* :meth:`Pruner.compensate`: after the harness has removed what the scores chose, change the
  *surviving* weights of a layer (OBS-style weight updates);
* :meth:`Pruner.grow_scores`: ask the harness to drop a few more connections and regrow as many
  elsewhere (RigL-style regrowth), the alive count still following the schedule exactly;
* the step view's layer inputs (``wants_inputs``) and dense gradients (``wants_dense_gradients``).

Between events a pruner may watch the training steps through :meth:`Pruner.observe` (every step of
the epochs whose statistics an event reads, or every N-th, or a window at each epoch's end: see
``Pruner.observe_epochs``, ``Pruner.observe_every`` and ``Pruner.observe_window``). That method runs
inside the training step, which on a GPU is captured and replayed as a CUDA graph, so it must be pure
tensor work on preallocated tensors: no ``.item()``, no Python branching on tensor values, no new
tensors kept across steps, no reference to the step view's tensors kept past the call, and no
change to a weight or a gradient (the optimizer steps with them). ``bench_harness.statistics``
holds accumulators built for this, and ``bench_harness.testing.check_pruner`` checks a pruner
against the whole contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

import torch
from torch import nn

from bench_harness.statistics import RunningMean, RunningMeans  # noqa: F401 - part of the pruner API

GRANULARITIES = ("connections", "neurons")
"""``connections``: individual weights. ``neurons``: units of FC layers, channels of conv layers."""

SCOPES = ("layer", "global", "erk", "lamp")
"""How an event shares its removals between layers (the allocation): ``layer``: every prunable layer
keeps the same fraction; ``global``: one ranking of the scores across layers; ``erk``: per-layer
densities from the Erdős–Rényi-kernel rule (Evci et al. 2020); ``lamp``: one ranking of
LAMP-normalised scores (Lee et al. 2021)."""

SCHEDULES = ("fixed", "cubic")
"""How the kept fraction falls from event to event: ``fixed``: the same fraction of the alive
elements per event; ``cubic``: Zhu & Gupta's (2017) curve, fast first and slow at the end."""


@dataclass(eq=False)
class PrunableLayer:
    """One ``nn.Linear`` or ``nn.Conv2d`` of the model, as the harness and the pruners see it."""

    name: str
    """The module's name in ``model.named_modules()``."""
    module: nn.Module
    index: int
    is_output: bool
    """The last prunable layer: its units (the classes) are never pruned; its connections may be."""
    next: "PrunableLayer | None" = field(default=None, repr=False)
    """The layer that reads this layer's units, or None for the output layer."""

    @property
    def weight(self) -> nn.Parameter:
        """The layer's weight parameter (out_units first)."""
        return self.module.weight

    @property
    def bias(self) -> nn.Parameter | None:
        """The layer's bias parameter, if it has one."""
        return self.module.bias

    @property
    def units(self) -> int:
        """Output features (Linear) or output channels (Conv2d)."""
        return self.module.weight.shape[0]

    @property
    def inputs_per_unit(self) -> int:
        """Input columns of the next layer that each of this layer's units feeds (1 between Linear
        layers and between convolutions; a channel's ``H*W`` block when a Flatten feeds a Linear)."""
        if self.next is None:
            raise ValueError(f"Layer {self.name} is the output layer and feeds no other layer.")
        return self.next.weight.shape[1] // self.units

    def outgoing_columns(self, per_unit: torch.Tensor) -> torch.Tensor:
        """Spread a per-unit vector over the next layer's input columns (NCHW flatten order)."""
        return per_unit.repeat_interleave(self.inputs_per_unit)

    def incoming_per_unit(self, per_weight: torch.Tensor) -> torch.Tensor:
        """Sum a weight-shaped tensor over each unit's incoming connections: shape ``(units,)``."""
        return per_weight.reshape(self.units, -1).sum(dim=1)

    def outgoing_per_unit(self, next_per_weight: torch.Tensor) -> torch.Tensor:
        """Sum a tensor shaped like the *next* layer's weight over the connections each unit feeds.

        A conv layer feeding a fully-connected layer through a flatten owns a contiguous block of the
        next layer's input columns (NCHW order), so the block is summed too.
        """
        per_input = next_per_weight.transpose(0, 1).reshape(next_per_weight.shape[1], -1).sum(dim=1)
        return per_input.reshape(self.units, self.inputs_per_unit).sum(dim=1)


def find_prunable_layers(model: nn.Module) -> list[PrunableLayer]:
    """Every Linear and Conv2d of a feed-forward chain, in order, linked to the layer that reads it."""
    found = [(name, module) for name, module in model.named_modules() if isinstance(module, (nn.Linear, nn.Conv2d))]
    if not found:
        raise ValueError("The model has no nn.Linear or nn.Conv2d layer to prune.")
    layers = [PrunableLayer(name, module, index, index == len(found) - 1) for index, (name, module) in enumerate(found)]
    for layer, following in zip(layers, layers[1:]):
        fan_in = following.weight.shape[1]
        if fan_in % layer.units != 0:
            raise ValueError(
                f"Layer {following.name} reads {fan_in} inputs, which is not a whole number of the "
                f"{layer.units} units of {layer.name}: the model is not a simple chain, so neuron pruning cannot map it."
            )
        layer.next = following
    return layers


def window_start(share: float, steps: int) -> int:
    """The first step of an epoch of ``steps`` steps that lies in its last ``share`` (see
    ``Pruner.observe_window``): ``steps - ceil(share x steps)``, with ``share`` read as the nearest
    fraction whose denominator is at most 1000, so that 7% of 100 steps is 7 steps (in floats,
    0.07 x 100 is 7.000000000000001, whose ceiling is 8)."""
    return steps - math.ceil(Fraction(share).limit_denominator(1000) * steps)


def layer_parameters(layers: list[PrunableLayer]) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of every layer's weight, then its bias if it has one, in layer order
    (names like ``fc1.weight``). ``StepView.gradients`` lays their gradients end to end in this order."""
    named = []
    for layer in layers:
        named.append((f"{layer.name}.weight", layer.weight))
        if layer.bias is not None:
            named.append((f"{layer.name}.bias", layer.bias))
    return named


@dataclass
class PruningContext:
    """What a pruner is given when a run starts."""

    model: nn.Module
    layers: list[PrunableLayer]
    optimizer: torch.optim.Optimizer
    seed: int
    """The run's seed: a stochastic criterion must draw from it so a run can be repeated exactly."""
    device: torch.device
    granularity: str
    batch_size: int


@dataclass
class StepView:
    """One training step as :meth:`Pruner.observe` sees it, after backward and before the update.

    Gradients are on the layers' parameters (``layer.weight.grad``), already masked; the optimizer
    state is in ``context.optimizer.state``.
    """

    loss: torch.Tensor
    """The mean cross-entropy of the batch (a 0-d tensor; never call ``.item()`` on it here)."""
    batch_size: int
    activations: dict[str, torch.Tensor] | None = None
    """Each prunable layer's output for this batch, only for pruners with ``wants_activations``."""
    inputs: dict[str, torch.Tensor] | None = None
    """Each prunable layer's input for this batch (for LeNet: the flattened image, then the hidden
    activations after ReLU; for a convolution its input feature map), only for pruners with
    ``wants_inputs``. Detached; valid during this call only."""
    dense_gradients: dict[str, torch.Tensor] | None = None
    """Each prunable layer's weight gradient *before* masking, so pruned positions show the gradient
    they would get if they were alive (what a regrowth criterion needs); only for pruners with
    ``wants_dense_gradients``. These are the parameters' own ``.grad`` tensors: for such a pruner,
    ``observe`` runs before the harness masks the gradients, so every parameter's ``.grad``
    (biases included) is unmasked during the call. Read-only, valid during the call."""
    gradients: torch.Tensor | None = None
    """The same gradients as the parameters' ``.grad`` (masked, or dense for a pruner with
    ``wants_dense_gradients``) as one flat tensor: every prunable layer's weight, then bias, end to
    end in the order of :func:`layer_parameters`. It is the memory the ``.grad`` tensors are views
    of, so a :class:`RunningMeans` built on ``[p for _, p in layer_parameters(context.layers)]``
    adds it in one kernel instead of one per tensor. None where the engine does not keep the
    gradients in one buffer (a step captured as a CUDA graph, whose gradients the capture allocates;
    parameters that cannot share one: see ``bench_harness.statistics.flat_gradients``; gradients
    that plugin code replaced): a pruner then reads the ``.grad`` tensors. Read-only, valid
    during the call."""


@dataclass
class Cut:
    """What one pruning event just removed from one layer, as :meth:`Pruner.compensate` sees it."""

    dropped: torch.Tensor
    """Boolean, weight-shaped: the weights this event removed (for neuron pruning, the weights the
    removed units took with them, outgoing ones included)."""
    alive: torch.Tensor
    """Boolean, weight-shaped: the weights still alive after the cut."""
    weight_before: torch.Tensor
    """The layer's weights just before the cut (the removed ones still hold their values here)."""


class Pruner:
    """Base class of every pruning criterion; subclass it and register the class.

    Class attributes describe the pruner to the harness and to ``bench list``; an instance lives for
    one run.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    granularities: ClassVar[tuple[str, ...]] = GRANULARITIES
    capturable: ClassVar[bool] = True
    """True when :meth:`observe` is pure tensor work that a CUDA graph can capture."""
    prunes: ClassVar[bool] = True
    """False only for the dense reference, which the harness then never prunes."""
    variant_of: ClassVar[str | None] = None
    """The name of the pruner this one is an ablation variant of (one component removed or
    changed, for ablation studies): ``bench list`` shows it, and it runs when named, never with
    ``--all``, whose leaderboard compares methods, not parts of one."""
    wants_activations: ClassVar[bool] = False
    """True to receive each prunable layer's output in ``StepView.activations``."""
    wants_inputs: ClassVar[bool] = False
    """True to receive each prunable layer's input in ``StepView.inputs``."""
    observe_epochs: ClassVar[int | None] = None
    """How many epochs of statistics an event needs: ``observe`` runs only in the last
    ``observe_epochs`` epochs before each event (None: every epoch since the previous event). It
    never runs after the last event, whose statistics nothing would read."""
    observe_every: ClassVar[int] = 1
    """Observe every N-th training step only: the steps 0, N, 2N, ... of each observed epoch (of its
    window, with ``observe_window``). The statistics then come from a regular sample of the same
    epochs, at 1/N of the observation's per-step cost (1: every step)."""
    observe_window: ClassVar[float] = 1.0
    """Observe only a contiguous window at the end of each observed epoch: its last
    ``ceil(observe_window x steps)`` steps (1.0: the whole epoch; at least 1/1000). The share is read
    as the nearest fraction with a denominator up to 1000, so 1/3 is a third exactly. Consecutive
    observations can find the statistics' totals still in the CPU's caches, where a stride
    (``observe_every``) finds them evicted by the steps in between."""
    wants_dense_gradients: ClassVar[bool] = False
    """True to receive the unmasked weight gradients in ``StepView.dense_gradients`` (``observe`` then
    runs before the gradient masking, and sees every ``.grad`` unmasked)."""

    def __init__(self, context: PruningContext) -> None:
        self.context = context

    @property
    def layers(self) -> list[PrunableLayer]:
        """The model's prunable layers, in order."""
        return self.context.layers

    def observe(self, step: StepView) -> None:
        """Accumulate statistics from one training step (optional; tensor work only).

        Called after backward and before the optimizer step. The gradients on the parameters are
        masked (zero where pruned), unless the pruner ``wants_dense_gradients``: then it is called
        before the masking and sees them unmasked. It must change neither weights nor gradients.
        """

    def score(self, layer: PrunableLayer, granularity: str) -> torch.Tensor:
        """Importance of each connection (weight-shaped) or neuron (shape ``(units,)``); lower goes first."""
        raise NotImplementedError(f"Pruner '{self.name}' does not implement score().")

    def compensate(self, layer: PrunableLayer, cut: Cut) -> torch.Tensor | None:
        """Optional: a change to ``layer``'s surviving weights after the harness removed some.

        ``cut`` says which weights were removed and which survive, and holds the weights as they
        were before the cut. Return a weight-shaped tensor to *add* to the current weights, or None
        for no change; the harness applies it to alive weights only and leaves the optimizer state
        of the changed weights as it is (Adam's moments stay an estimate of the gradient's scale).
        Called once per layer per event, after the cut and before any regrowth.
        """
        return None

    def grow_scores(self, layer: PrunableLayer) -> torch.Tensor:
        """Optional: how much each connection of ``layer`` should be regrown (higher first).

        A pruner that implements this regrows. At each event the harness then drops, per layer, g
        more connections than the schedule asks (the lowest-scored survivors), and regrows the g
        non-alive connections with the highest grow scores, so the alive count still follows the
        schedule exactly; g is ``--regrow-fraction`` of the layer's alive connections, decayed with
        a cosine over the run. Regrown weights and their optimizer state start at zero. Connections
        granularity only.
        """
        raise NotImplementedError(f"Pruner '{self.name}' does not regrow.")

    def after_prune(self) -> None:
        """Called after each pruning event, e.g. to restart statistics (reset tensors in place)."""

    def state_dict(self) -> dict:
        """What the pruner has learnt so far, for a checkpoint: a run resumed from it must continue
        exactly as if it had never stopped.

        The default finds the pruner's own tensors, ``torch.Generator`` objects and the
        accumulators of :mod:`bench_harness.statistics`, in its attributes and in the dicts, lists
        and tuples they hold, and returns copies of them in the same nesting (a generator as its
        state). Other objects (the context, layers, modules) are not entered, and the model's
        parameters and buffers (or views of them) are left out: they are the harness's to save and
        restore. A pruner that keeps other state that changes during training (a Python number, an
        object of its own) overrides this method and :meth:`load_state_dict`;
        ``bench_harness.testing.check_pruner`` fails a pruner whose resumed run differs.
        """
        return _collect_state(vars(self), _harness_storages(self.context)) or {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s result into this (freshly built) pruner, **in place**.

        Every tensor is restored with ``copy_`` into the tensor the pruner already holds, never by
        binding a new one: a training step captured as a CUDA graph keeps raw pointers to the
        tensors ``observe`` updates, so rebinding would leave the graph writing to the old ones. A
        dict entry the fresh pruner does not have yet (a cache filled during training) is added. A
        state whose structure does not match the pruner raises ``ValueError``.
        """
        _restore_state(self, vars(self), state, "", _harness_storages(self.context))

    @classmethod
    def compensates(cls) -> bool:
        """True when the class implements :meth:`compensate`."""
        return cls.compensate is not Pruner.compensate

    @classmethod
    def observes(cls) -> bool:
        """True when the class prunes and implements :meth:`observe` (else no step calls it)."""
        return cls.prunes and cls.observe is not Pruner.observe

    @classmethod
    def observed_steps(cls, steps: int) -> range:
        """The steps (0-based) of an observed epoch of ``steps`` steps that call :meth:`observe`: the
        epoch's last ``observe_window`` share, every ``observe_every``-th step of it from its first."""
        return range(window_start(cls.observe_window, steps), steps, cls.observe_every)

    @classmethod
    def regrows(cls) -> bool:
        """True when the class implements :meth:`grow_scores`."""
        return cls.grow_scores is not Pruner.grow_scores


def _is_accumulator(value: Any) -> bool:
    """An accumulator of :mod:`bench_harness.statistics` (walked into like a container)."""
    return type(value).__module__ == "bench_harness.statistics"


def _accumulator_state(value: Any) -> dict:
    """An accumulator's attributes that are state: its private ones are derived (views of the others)."""
    return {key: item for key, item in vars(value).items() if not key.startswith("_")}


def _harness_storages(context: PruningContext) -> set[int]:
    """Storage addresses of the model's parameters and buffers: a pruner may hold them (or views of
    them), but they are the harness's to save and restore."""
    model = getattr(context, "model", None)
    if model is None:
        return set()
    return {tensor.untyped_storage().data_ptr() for tensor in [*model.parameters(), *model.buffers()]}


def _owned(tensor: torch.Tensor, harness: set[int]) -> bool:
    return not isinstance(tensor, nn.Parameter) and tensor.untyped_storage().data_ptr() not in harness


def _collect_state(value: Any, harness: set[int]) -> Any:
    """The stateful leaves under ``value`` in the same nesting, or None where there are none."""
    if torch.is_tensor(value):
        return value.detach().clone() if _owned(value, harness) else None
    if isinstance(value, torch.Generator):
        return value.get_state()
    if isinstance(value, dict) or _is_accumulator(value):
        items = _accumulator_state(value).items() if _is_accumulator(value) else value.items()
        found = {}
        for key, item in items:
            state = _collect_state(item, harness)
            if state is not None:
                found[key] = state
        return found or None
    if isinstance(value, (list, tuple)):
        states = [_collect_state(item, harness) for item in value]
        return states if any(state is not None for state in states) else None
    return None


def _restore_state(pruner: Pruner, target: Any, state: Any, path: str, harness: set[int]) -> None:
    """Copy ``state`` into ``target`` in place, walking both in step; ``path`` names where, for errors."""
    where = f"pruner '{pruner.name}' state at {path or 'the top'}"
    if torch.is_tensor(target):
        if not torch.is_tensor(state) or tuple(state.shape) != tuple(target.shape):
            got = tuple(state.shape) if torch.is_tensor(state) else type(state).__name__
            raise ValueError(f"The {where} is a tensor of shape {tuple(target.shape)}, but the checkpoint holds {got}.")
        with torch.no_grad():
            target.copy_(state)
        return
    if isinstance(target, torch.Generator):
        if not torch.is_tensor(state):
            raise ValueError(f"The {where} is a generator, but the checkpoint holds {type(state).__name__}.")
        target.set_state(state.detach().to("cpu", torch.uint8))
        return
    if isinstance(target, dict) or _is_accumulator(target):
        if not isinstance(state, dict):
            raise ValueError(f"The {where} is a {type(target).__name__}, but the checkpoint holds {type(state).__name__}.")
        items = _accumulator_state(target) if _is_accumulator(target) else target
        expected = _collect_state(target, harness) or {}
        missing = [key for key in expected if key not in state]
        if missing:
            raise ValueError(f"The checkpoint lacks {', '.join(map(repr, missing))} of the {where}.")
        for key, value in state.items():
            if key in items:
                _restore_state(pruner, items[key], value, f"{path}.{key}" if path else str(key), harness)
            elif isinstance(target, dict):
                target[key] = _fresh(value, pruner)  # a cache entry made during training: nothing to keep in place
            else:
                raise ValueError(f"The checkpoint holds {key!r}, which the {where} does not have.")
        return
    if isinstance(target, (list, tuple)):
        if not isinstance(state, (list, tuple)) or len(state) != len(target):
            raise ValueError(f"The {where} is a {type(target).__name__} of {len(target)} items; the checkpoint's does not match.")
        for index, (item, value) in enumerate(zip(target, state)):
            if value is not None:
                _restore_state(pruner, item, value, f"{path}[{index}]", harness)
        return
    raise ValueError(f"The {where} is a {type(target).__name__}, which the default load_state_dict() cannot restore; override it.")


def _fresh(value: Any, pruner: Pruner) -> Any:
    """A restored value for a place the fresh pruner does not have: tensors on the run's device."""
    device = getattr(pruner.context, "device", None)
    if torch.is_tensor(value):
        return value.to(device) if device is not None else value
    if isinstance(value, dict):
        return {key: _fresh(item, pruner) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_fresh(item, pruner) for item in value)
    return value


def state_tensors(pruner: Pruner) -> dict[str, int]:
    """Where each tensor of the pruner's default state lives (path -> storage address): what an
    in-place restore must leave unchanged. Used by the contract check."""
    found: dict[str, int] = {}
    harness = _harness_storages(pruner.context)

    def walk(value: Any, path: str) -> None:
        if torch.is_tensor(value):
            if _owned(value, harness):
                found[path] = value.untyped_storage().data_ptr()
        elif isinstance(value, dict) or _is_accumulator(value):
            for key, item in (_accumulator_state(value) if _is_accumulator(value) else value).items():
                walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")

    walk(vars(pruner), "")
    return found


def validate_pruner_class(pruner_class: Any) -> None:
    """Refuse a registered object that cannot work as a pruner, with a sentence the author can act on."""
    if not (isinstance(pruner_class, type) and issubclass(pruner_class, Pruner)):
        raise TypeError(f"register_pruners got {pruner_class!r}, not a subclass of bench_harness.pruner.Pruner")
    unknown = set(pruner_class.granularities) - set(GRANULARITIES)
    if unknown:
        raise TypeError(f"pruner '{pruner_class.name}' declares unknown granularities {sorted(unknown)}")
    if pruner_class.variant_of is not None and not isinstance(pruner_class.variant_of, str):
        raise TypeError(f"pruner '{pruner_class.name}' declares variant_of {pruner_class.variant_of!r}, not a pruner's name")
    window = pruner_class.observe_epochs
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise TypeError(f"pruner '{pruner_class.name}' declares observe_epochs {window!r}; it must be None or a whole number of epochs, at least 1")
    every = pruner_class.observe_every
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise TypeError(f"pruner '{pruner_class.name}' declares observe_every {every!r}; it must be a whole number of steps, at least 1")
    share = pruner_class.observe_window
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 1 / 1000 <= share <= 1:
        raise TypeError(f"pruner '{pruner_class.name}' declares observe_window {share!r}; it must be a share of the epoch's steps, from 1/1000 to 1")
    if pruner_class.regrows() and "connections" not in pruner_class.granularities:
        raise TypeError(f"pruner '{pruner_class.name}' implements grow_scores, which only connections granularity uses")


