"""NVML GPU telemetry: a background sampler for a run, and a one-shot inventory for ``bench info``.

Everything here degrades to "no data" instead of raising: on a machine without an NVIDIA driver,
without the ``pynvml`` module, or for a run on the CPU, the sampler is a no-op whose summary is
``None``. A query the GPU does not support (``NVMLError``) gives ``None`` for that one field.

Units: memory in MB where 1 MB = 2**20 bytes (what ``nvidia-smi`` shows as MiB), power in watts,
energy in joules, temperature in degrees Celsius, clocks in MHz.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

try:
    import pynvml
except ImportError:  # the harness must still run (on the CPU) where nvidia-ml-py is absent
    pynvml = None

BYTES_PER_MB = 2**20
"""Bytes in one MB as reported here (MiB, to match ``nvidia-smi``)."""

FIELDS = ("gpu_utilization_percent", "memory_used_mb", "power_watts", "temperature_c", "sm_clock_mhz")
"""The sampled quantities, in the order the summary lists them."""

_POWER_FIELD = FIELDS.index("power_watts")

_clock_seconds: Callable[[], float] = time.perf_counter
"""The sampler's clock; a module attribute so that tests can substitute a deterministic one."""


def _nvml_error_type() -> type[BaseException]:
    """NVML's exception class, or a class nothing raises when pynvml is missing."""
    if pynvml is None:
        return _NeverRaised
    return pynvml.NVMLError


class _NeverRaised(Exception):
    """Stand-in for ``NVMLError`` where pynvml is not installed."""


def _is_permanent(error: BaseException) -> bool:
    """Whether a failed query will never work on this GPU and driver (so the sampler stops asking)."""
    if isinstance(error, AttributeError):  # an older pynvml without this function
        return True
    if pynvml is None:
        return False
    return getattr(error, "value", None) in (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)


def _text(value: Any) -> str:
    """NVML strings arrive as ``str`` or ``bytes`` depending on the call and the pynvml version."""
    return value.decode() if isinstance(value, bytes) else str(value)


class _RunningStat:
    """Mean and maximum of a stream of numbers in O(1) memory, so long runs cost nothing extra."""

    __slots__ = ("count", "total", "maximum")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.maximum = float("-inf")

    def add(self, value: float) -> None:
        """Fold one sample in."""
        self.count += 1
        self.total += value
        if value > self.maximum:
            self.maximum = value

    def as_dict(self) -> dict:
        """``{"mean", "max"}``, both ``None`` when no sample had a value."""
        if self.count == 0:
            return {"mean": None, "max": None}
        return {"mean": self.total / self.count, "max": self.maximum}


class TelemetrySampler:
    """Samples one GPU's utilisation, memory, power, temperature and SM clock on a daemon thread.

    ``device_index`` is NVML's index of the GPU (equal to CUDA's index unless ``CUDA_VISIBLE_DEVICES``
    or ``CUDA_DEVICE_ORDER`` reorder devices); ``None`` makes the sampler a no-op, as does a machine
    where NVML is missing or fails to initialise. Use it as a context manager (``with sampler:``) or
    call :meth:`start` and :meth:`stop`.

    Energy comes from NVML's total-energy counter read at start and stop (``energy_source ==
    "counter"``); where the GPU does not support that counter it is the trapezoidal integral of the
    sampled power over the samples' timestamps (``"integrated-power"``), and ``None`` if neither is
    available. One sample is taken synchronously at start and one at stop, so the integral spans the
    whole measured interval even when it is shorter than one period.

    The cost is kept far below 1% of a training run: one thread, five NVML calls per period, running
    sums instead of growing lists, queries the GPU reports as unsupported are dropped after the first
    refusal, and the thread waits on an ``Event`` so :meth:`stop` returns within one NVML round-trip.
    """

    def __init__(self, device_index: int | None, period_seconds: float = 0.1) -> None:
        if period_seconds <= 0:
            raise ValueError(f"period_seconds must be positive, got {period_seconds}.")
        self.device_index = device_index
        self.period_seconds = float(period_seconds)
        self.error: str | None = None
        """Why the sampler is inactive (NVML missing, init failed, no device index), else ``None``."""
        self._handle: Any = None
        self._queries: list[tuple[int, Callable[[], float]]] = []
        self._stats = [_RunningStat() for _ in FIELDS]
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the sampler thread and the caller's final sample both write stats
        self._active = False  # NVML initialised by this sampler and not yet shut down
        self._measured = False  # at least one start() reached NVML, so summary() has data
        self._start_seconds: float | None = None
        self._stop_seconds: float | None = None
        self._energy_start_mj: int | None = None
        self._energy_stop_mj: int | None = None
        self._last_power: tuple[float, float] | None = None  # (timestamp_seconds, watts) for the trapezoid
        self._integrated_joules = 0.0
        self._power_points = 0
        self._sample_count = 0

    # ----------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> "TelemetrySampler":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the sampler is between :meth:`start` and :meth:`stop` with NVML active."""
        return self._active

    def start(self) -> None:
        """Initialise NVML, read the energy counter, take a first sample and start the thread.

        Does nothing (and records why in :attr:`error`) when no GPU can be sampled.
        """
        if self._active:
            raise RuntimeError("TelemetrySampler.start() called twice without stop().")
        self._measured = False  # the summary always describes the latest start(), even a no-op one
        if not self._init_nvml():
            return
        self._reset()
        self._active = True
        self._energy_start_mj = self._read_energy_mj()
        now = _clock_seconds()
        self._start_seconds = now
        self._measured = True
        self._sample(now)
        self._stop_event.clear()
        self._thread = threading.Thread(target=self._run, name="telemetry-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread promptly, take a last sample, read the energy counter and shut NVML down.

        Safe to call when the sampler never started or has already stopped.
        """
        if not self._active:
            return
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        now = _clock_seconds()
        self._sample(now)
        self._stop_seconds = now
        self._energy_stop_mj = self._read_energy_mj()
        self._active = False
        try:
            pynvml.nvmlShutdown()
        except _nvml_error_type():
            pass  # shutting down is best effort; the data is already collected

    def _init_nvml(self) -> bool:
        """Initialise NVML and get the device handle; on any failure record why and return False."""
        if self.device_index is None:
            self.error = "no GPU device index was given"
            return False
        if pynvml is None:
            self.error = "the pynvml module (nvidia-ml-py) is not installed"
            return False
        try:
            pynvml.nvmlInit()
        except Exception as error:  # a missing driver raises more than NVMLError on some platforms
            self.error = f"NVML could not be initialised: {_text(error)}"
            return False
        try:
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.device_index)
        except Exception as error:
            self.error = f"NVML has no device {self.device_index}: {_text(error)}"
            try:
                pynvml.nvmlShutdown()
            except Exception:
                pass
            return False
        self.error = None
        self._queries = self._build_queries(self._handle)
        return True

    def _reset(self) -> None:
        """Forget a previous measurement so a sampler can be reused."""
        self._stats = [_RunningStat() for _ in FIELDS]
        self._start_seconds = self._stop_seconds = None
        self._energy_start_mj = self._energy_stop_mj = None
        self._last_power = None
        self._integrated_joules = 0.0
        self._power_points = 0
        self._sample_count = 0

    # ------------------------------------------------------------------------------------ sampling
    @staticmethod
    def _build_queries(handle: Any) -> list[tuple[int, Callable[[], float]]]:
        """One zero-argument callable per field, bound once so each sample does no lookups."""
        nvml = pynvml
        return [
            (0, lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)),
            (1, lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used / BYTES_PER_MB),
            (2, lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),  # NVML reports milliwatts
            (3, lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))),
            (4, lambda: float(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM))),
        ]

    def _run(self) -> None:
        """Thread body: sample every period until stop() sets the event."""
        # Event.wait returns True as soon as stop() sets it, so stopping never waits out a period.
        while not self._stop_event.wait(self.period_seconds):
            self._sample(_clock_seconds())

    def _sample(self, now_seconds: float) -> None:
        """Query every still-supported field once and fold the values into the running stats."""
        failures = (_nvml_error_type(), AttributeError)
        unsupported: list[int] = []
        with self._lock:
            self._sample_count += 1
            for position, (field_index, query) in enumerate(self._queries):
                try:
                    value = query()
                except failures as error:
                    if _is_permanent(error):
                        unsupported.append(position)
                    continue  # this field is None for this sample
                self._stats[field_index].add(value)
                if field_index == _POWER_FIELD:
                    self._integrate_power(now_seconds, value)
            for position in reversed(unsupported):
                del self._queries[position]

    def _integrate_power(self, now_seconds: float, watts: float) -> None:
        """Add the trapezoid between the previous power sample and this one to the energy integral."""
        if self._last_power is not None:
            last_seconds, last_watts = self._last_power
            self._integrated_joules += 0.5 * (last_watts + watts) * (now_seconds - last_seconds)
        self._last_power = (now_seconds, watts)
        self._power_points += 1

    def _read_energy_mj(self) -> int | None:
        """NVML's total energy since the driver loaded, in millijoules, or ``None`` if unsupported."""
        if self._handle is None:
            return None
        try:
            return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except _nvml_error_type():
            return None

    # ------------------------------------------------------------------------------------- results
    def _energy(self) -> tuple[float | None, str | None]:
        """(joules, source) for the measured interval; see the class docstring for the sources."""
        start_mj = self._energy_start_mj
        stop_mj = self._energy_stop_mj if not self._active else self._read_energy_mj()
        # A counter that went backwards (driver reload) is as good as no counter.
        if start_mj is not None and stop_mj is not None and stop_mj >= start_mj:
            return (stop_mj - start_mj) / 1000.0, "counter"
        if self._power_points >= 2:
            return self._integrated_joules, "integrated-power"
        return None, None

    @property
    def energy_joules(self) -> float | None:
        """Energy the GPU used over the measured interval, in joules; ``None`` if nothing was measured."""
        if not self._measured:
            return None
        return self._energy()[0]

    @property
    def energy_source(self) -> str | None:
        """``"counter"``, ``"integrated-power"``, or ``None`` when no energy figure exists."""
        if not self._measured:
            return None
        return self._energy()[1]

    def summary(self) -> dict | None:
        """The measurement as a JSON-ready dict, or ``None`` when the sampler was a no-op.

        Keys: ``samples``, ``period_seconds``, ``duration_seconds``, one ``{"mean", "max"}`` dict per
        field in :data:`FIELDS`, ``energy_joules`` and ``energy_source``. ``samples`` counts sampling
        instants (a field the GPU refused has fewer values, possibly none). Called while the sampler
        runs, it reports the samples so far and the energy up to now.
        """
        if not self._measured:
            return None
        with self._lock:
            samples = self._sample_count
            fields = {name: stat.as_dict() for name, stat in zip(FIELDS, self._stats)}
            end_seconds = self._stop_seconds if self._stop_seconds is not None else _clock_seconds()
            energy_joules, energy_source = self._energy()
        return {
            "samples": samples,
            "period_seconds": self.period_seconds,
            "duration_seconds": end_seconds - self._start_seconds,
            **fields,
            "energy_joules": energy_joules,
            "energy_source": energy_source,
        }


def _uuid_key(uuid: Any) -> str:
    """A GPU UUID as CUDA and NVML both know it: lower case, without NVML's ``GPU-`` prefix."""
    return _text(uuid).strip().lower().removeprefix("gpu-")


def nvml_index(device: Any) -> int | None:
    """NVML's index of a torch CUDA device, or ``None`` for any other device.

    CUDA numbers only the GPUs that ``CUDA_VISIBLE_DEVICES`` leaves visible, in its own order, while
    NVML numbers every GPU of the machine; on a shared node "cuda:0" can be NVML's GPU 3. The two
    are matched by the GPU's UUID, so telemetry describes the GPU the run actually used. Where the
    UUID cannot be read or matched, CUDA's index is the best guess left.
    """
    if getattr(device, "type", None) != "cuda":
        return None
    import torch  # only here: the rest of this module must work without touching CUDA

    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        wanted = _uuid_key(torch.cuda.get_device_properties(index).uuid)
    except Exception:  # an older torch without ``uuid``, or no usable CUDA device
        return index
    found = _nvml_index_of_uuid(wanted)
    return index if found is None else found


def _nvml_index_of_uuid(wanted: str) -> int | None:
    """The NVML index of the GPU with this UUID key, or ``None`` (no NVML, no such GPU, any failure)."""
    if pynvml is None:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            if _uuid_key(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(index))) == wanted:
                return index
        return None
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def nvml_info() -> dict:
    """What NVML can see, for ``bench info``; never raises.

    Returns ``{"nvml_available", "driver_version", "nvml_version", "devices", "error"}`` where each
    device is ``{"index", "name", "memory_total_mb"}`` and ``error`` says why NVML is unavailable.
    """
    info: dict = {"nvml_available": False, "driver_version": None, "nvml_version": None, "devices": [], "error": None}
    if pynvml is None:
        info["error"] = "the pynvml module (nvidia-ml-py) is not installed"
        return info
    try:
        pynvml.nvmlInit()
    except Exception as error:
        info["error"] = f"NVML could not be initialised: {_text(error)}"
        return info
    nvml_error = _nvml_error_type()
    try:
        info["nvml_available"] = True
        for key, query in (("driver_version", pynvml.nvmlSystemGetDriverVersion), ("nvml_version", pynvml.nvmlSystemGetNVMLVersion)):
            try:
                info[key] = _text(query())
            except nvml_error:
                pass  # an unknown version is not a reason to hide the devices
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            device: dict = {"index": index, "name": None, "memory_total_mb": None}
            try:
                device["name"] = _text(pynvml.nvmlDeviceGetName(handle))
            except nvml_error:
                pass
            try:
                device["memory_total_mb"] = pynvml.nvmlDeviceGetMemoryInfo(handle).total / BYTES_PER_MB
            except nvml_error:
                pass
            info["devices"].append(device)
    except nvml_error as error:
        info["error"] = f"NVML failed while listing devices: {_text(error)}"
    finally:
        try:
            pynvml.nvmlShutdown()
        except nvml_error:
            pass
    return info
