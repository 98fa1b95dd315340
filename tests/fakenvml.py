"""A fake `pynvml` module: NVML faked only at its Python boundary.

It has pynvml's function names, constants and (the real) NVMLError classes, so the collector runs
exactly the code it runs against the real library. Tests flip its state: GPUs, unsupported fields,
throttle reasons, a lost GPU, a missing library or driver, XID events.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

# constants and error classes copied from the real module
for _name in dir(pynvml):
    if _name.startswith(("NVML_", "NVMLError", "nvmlClocks", "nvmlEventType")):
        globals()[_name] = getattr(pynvml, _name)
NVMLError = pynvml.NVMLError


def err(code: int) -> pynvml.NVMLError:
    """The real pynvml exception for an NVML return code (e.g. NVMLError_NotSupported)."""
    return pynvml.NVMLError(code)


@dataclass
class FakeMig:
    """One MIG device (a compute instance of a GPU instance) as NVML lists it under its parent GPU."""

    gi_id: int
    profile: str  # NVML names a MIG device "<parent name> MIG <profile>", e.g. "1g.6gb" or "1c.2g.12gb"
    mem_used: int = 0  # bytes
    mem_total: int = 6 * 1024**3


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA L4"
    util: int = 0
    mem_util: int = 0
    mem_used: int = 0  # bytes
    mem_total: int = 24 * 1024**3
    temp: int = 40
    slowdown: int = 90
    shutdown: int = 95
    power_mw: int = 70_000
    power_limit_mw: int = 72_000
    sm_clock: int = 1500
    sm_clock_max: int = 2040
    reasons: int = 0
    fan: int = 30
    ecc: int = 0
    remapped: tuple[int, int, int, int] = (0, 0, 0, 0)
    replay: int = 0
    pids: tuple[int, ...] = ()
    unsupported: set[str] = field(default_factory=set)  # function names answering NotSupported
    lost: bool = False
    # MIG: None for a GPU without MIG support (NotSupported); else the mode and the MIG devices, in slots
    mig_mode: int | None = None
    mig: list[FakeMig] = field(default_factory=list)
    max_mig: int = 7  # MIG device slots (A100/H100: 7, A30: 4)


class FakeNvml:
    """Module-like: `GpuCollector(nvml=FakeNvml([...]))`."""

    # the constants the collector reads (collectors.nvml.Nvml), named for the type checker; __init__ copies all
    NVML_CLOCK_SM: int = pynvml.NVML_CLOCK_SM
    NVML_TEMPERATURE_GPU: int = pynvml.NVML_TEMPERATURE_GPU
    NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: int = pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
    NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: int = pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED: int = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    NVML_VOLATILE_ECC: int = pynvml.NVML_VOLATILE_ECC
    NVML_DEVICE_MIG_ENABLE: int = pynvml.NVML_DEVICE_MIG_ENABLE

    def __init__(self, gpus: list[FakeGpu] | None = None, *, init_error: int | None = None) -> None:
        self.gpus = list(gpus or [])
        self.init_error = init_error  # e.g. NVML_ERROR_LIBRARY_NOT_FOUND
        self.driver_gone = False  # every call answers Uninitialized (a driver reload)
        self.initialized = False
        self.init_calls = 0
        self.calls = 0
        self.thread_names: set[str] = set()
        self._events: queue.Queue[tuple[int, int]] = queue.Queue()
        self._lock = threading.Lock()
        for name in dir(pynvml):
            if name.startswith(("NVML_", "NVMLError", "nvmlClocks", "nvmlEventType")):
                setattr(self, name, getattr(pynvml, name))
        self.NVMLError = pynvml.NVMLError

    # -- test controls -------------------------------------------------------------------------
    def emit_xid(self, index: int, xid: int) -> None:
        self._events.put((index, xid))

    # -- library -------------------------------------------------------------------------------
    def _check(self) -> None:
        self.calls += 1
        self.thread_names.add(threading.current_thread().name)
        if self.driver_gone or not self.initialized:
            raise err(pynvml.NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: Any, fn: str) -> FakeGpu:
        self._check()
        g = self.gpus[handle.index]
        if g.lost:
            raise err(pynvml.NVML_ERROR_GPU_IS_LOST)
        if fn in g.unsupported:
            raise err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return g

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise err(self.init_error)
        self.driver_gone = False
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self.initialized = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check()
        return "580.105.08"

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self._check()
        if index >= len(self.gpus):
            raise err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if self.gpus[index].lost:
            raise err(pynvml.NVML_ERROR_GPU_IS_LOST)
        return SimpleNamespace(index=index)

    def nvmlDeviceGetIndex(self, handle: Any) -> int:
        self._check()
        return int(handle.index)

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        return self._gpu(h, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetName(self, h: Any) -> str:
        g = self._gpu(h, "nvmlDeviceGetName")
        m = self._mig_of(h)
        return g.name if m is None else f"{g.name} MIG {m.profile}"

    def nvmlDeviceGetUtilizationRates(self, h: Any) -> Any:
        g = self._gpu(h, "nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=g.util, memory=g.mem_util)

    def nvmlDeviceGetMemoryInfo(self, h: Any, version: Any = None) -> Any:
        g = self._gpu(h, "nvmlDeviceGetMemoryInfo")
        m = self._mig_of(h)
        used, total = (g.mem_used, g.mem_total) if m is None else (m.mem_used, m.mem_total)
        return SimpleNamespace(total=total, used=used, free=total - used)

    # -- MIG -----------------------------------------------------------------------------------
    def _mig_of(self, h: Any) -> FakeMig | None:
        slot = getattr(h, "mig", None)
        return None if slot is None else self.gpus[h.index].mig[slot]

    def _parent(self, h: Any, fn: str) -> FakeGpu:
        g = self._gpu(h, fn)
        if g.mig_mode is None or getattr(h, "mig", None) is not None:
            raise err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return g

    def nvmlDeviceGetMigMode(self, h: Any) -> list[int]:
        g = self._parent(h, "nvmlDeviceGetMigMode")
        return [int(g.mig_mode or 0), int(g.mig_mode or 0)]

    def nvmlDeviceGetMaxMigDeviceCount(self, h: Any) -> int:
        return self._parent(h, "nvmlDeviceGetMaxMigDeviceCount").max_mig

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: Any, index: int) -> Any:
        g = self._parent(h, "nvmlDeviceGetMigDeviceHandleByIndex")
        if index >= g.max_mig:
            raise err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if g.mig_mode != pynvml.NVML_DEVICE_MIG_ENABLE or index >= len(g.mig):
            raise err(pynvml.NVML_ERROR_NOT_FOUND)  # an empty slot
        return SimpleNamespace(index=h.index, mig=index)

    def nvmlDeviceGetGpuInstanceId(self, h: Any) -> int:
        self._gpu(h, "nvmlDeviceGetGpuInstanceId")
        m = self._mig_of(h)
        if m is None:
            raise err(pynvml.NVML_ERROR_INVALID_ARGUMENT)  # not a MIG device handle
        return m.gi_id

    def nvmlDeviceGetTemperature(self, h: Any, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._gpu(h, "nvmlDeviceGetTemperature").temp

    def nvmlDeviceGetTemperatureThreshold(self, h: Any, threshold: int) -> int:
        g = self._gpu(h, "nvmlDeviceGetTemperatureThreshold")
        if threshold == pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN:
            return g.slowdown
        if threshold == pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN:
            return g.shutdown
        raise err(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetPowerUsage(self, h: Any) -> int:
        return self._gpu(h, "nvmlDeviceGetPowerUsage").power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, h: Any) -> int:
        return self._gpu(h, "nvmlDeviceGetEnforcedPowerLimit").power_limit_mw

    def nvmlDeviceGetClockInfo(self, h: Any, kind: int) -> int:
        assert kind == pynvml.NVML_CLOCK_SM
        return self._gpu(h, "nvmlDeviceGetClockInfo").sm_clock

    def nvmlDeviceGetMaxClockInfo(self, h: Any, kind: int) -> int:
        assert kind == pynvml.NVML_CLOCK_SM
        return self._gpu(h, "nvmlDeviceGetMaxClockInfo").sm_clock_max

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: Any) -> int:
        return self._gpu(h, "nvmlDeviceGetCurrentClocksEventReasons").reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: Any) -> int:
        return self._gpu(h, "nvmlDeviceGetCurrentClocksThrottleReasons").reasons

    def nvmlDeviceGetFanSpeed(self, h: Any) -> int:
        return self._gpu(h, "nvmlDeviceGetFanSpeed").fan

    def nvmlDeviceGetTotalEccErrors(self, h: Any, error_type: int, counter_type: int) -> int:
        assert error_type == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
        assert counter_type == pynvml.NVML_VOLATILE_ECC
        return self._gpu(h, "nvmlDeviceGetTotalEccErrors").ecc

    def nvmlDeviceGetRemappedRows(self, h: Any) -> tuple[int, int, int, int]:
        return self._gpu(h, "nvmlDeviceGetRemappedRows").remapped

    def nvmlDeviceGetPcieReplayCounter(self, h: Any) -> int:
        return self._gpu(h, "nvmlDeviceGetPcieReplayCounter").replay

    def nvmlDeviceGetComputeRunningProcesses(self, h: Any) -> list[Any]:
        g = self._gpu(h, "nvmlDeviceGetComputeRunningProcesses")
        return [SimpleNamespace(pid=p, usedGpuMemory=None) for p in g.pids]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: Any) -> list[Any]:
        self._gpu(h, "nvmlDeviceGetGraphicsRunningProcesses")
        return []

    # -- events --------------------------------------------------------------------------------
    def nvmlEventSetCreate(self) -> Any:
        self._check()
        return SimpleNamespace(registered=set(), freed=False)

    def nvmlDeviceRegisterEvents(self, h: Any, event_types: int, es: Any) -> None:
        g = self._gpu(h, "nvmlDeviceRegisterEvents")
        assert event_types & pynvml.nvmlEventTypeXidCriticalError
        del g
        es.registered.add(h.index)

    def nvmlEventSetWait_v2(self, es: Any, timeout_ms: int) -> Any:
        if self.driver_gone:
            raise err(pynvml.NVML_ERROR_UNINITIALIZED)
        try:
            index, xid = self._events.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            raise err(pynvml.NVML_ERROR_TIMEOUT) from None
        return SimpleNamespace(
            device=SimpleNamespace(index=index), eventType=pynvml.nvmlEventTypeXidCriticalError,
            eventData=xid, gpuInstanceId=0, computeInstanceId=0,
        )

    def nvmlEventSetFree(self, es: Any) -> None:
        es.freed = True
