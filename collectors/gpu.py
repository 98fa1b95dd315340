"""Local GPUs through NVML (`import pynvml`, package nvidia-ml-py).

Every NVML call runs in one dedicated worker thread (NVML calls block, sometimes for tens of ms), one
thread hop per poll for all GPUs. Handles and static facts (uuid, name, thresholds, max clock) are read
once. XID errors arrive through an NVML event set waited on in its own thread.

Failure model, as operators meet it:
- no library / no driver: one clear status ("no_library", "no_driver"); init is retried with backoff,
  the rest of the program runs;
- a field the GPU does not support: None ("n/a"), never an error;
- GPU_IS_LOST on one GPU: that GPU is marked "lost", the others keep updating; its handle is retried
  with backoff (after a reset it comes back);
- MIG: a GPU in MIG mode lists its GPU instances (`GpuSample.mig`, the model the dcgm parser fills);
  a GPU without MIG support (NotSupported) or with MIG off is `mig=None`;
- the driver goes away under us (Uninitialized, DriverNotLoaded, RM version mismatch after a reload):
  NVML is shut down and re-initialized with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pynvml  # nvidia-ml-py: pure Python; libnvidia-ml is loaded only by nvmlInit

from collectors.nvml import Nvml
from collectors.reasons import decode_reasons
from collectors.samples import GpuSample, GpusSample, MigInstance, mig_memory_mib

log = logging.getLogger(__name__)

# pynvml's named exceptions (NVMLError(code) constructs the subclass for its code, so the real and the
# test's pynvml raise the same classes)
DRIVER_GONE_ERRORS: tuple[type[Exception], ...] = (
    pynvml.NVMLError_Uninitialized, pynvml.NVMLError_DriverNotLoaded, pynvml.NVMLError_LibRmVersionMismatch,
    pynvml.NVMLError_LibraryNotFound,
)
XID_EVENT = 0x0000000000000008  # nvmlEventTypeXidCriticalError
MIB = 1024 * 1024


class GpuLost(Exception):
    """NVML said GPU_IS_LOST for this device."""


class DriverGone(Exception):
    """NVML lost its driver (uninitialized, driver not loaded, version mismatch): re-initialize."""


def nvml_query(func: Callable[..., Any], *args: Any) -> Any:
    """Call an NVML function: None ("n/a") for unsupported or missing fields.

    Raises GpuLost for GPU_IS_LOST and DriverGone when the driver went away; anything else that
    NVML reports is treated as n/a for this one field, so one odd field never hides a GPU.
    """
    try:
        return func(*args)
    except Exception as e:
        if isinstance(e, pynvml.NVMLError_GpuIsLost):
            raise GpuLost(str(e)) from e
        if isinstance(e, DRIVER_GONE_ERRORS):
            raise DriverGone(str(e)) from e
        if not isinstance(e, (pynvml.NVMLError, AttributeError, TypeError, ValueError)):
            raise
        return None


def _text(v: Any) -> str | None:
    if v is None:
        return None
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


@dataclass
class _Device:
    index: int
    handle: Any
    uuid: str | None = None
    name: str | None = None
    temp_slowdown_c: float | None = None
    temp_shutdown_c: float | None = None
    sm_clock_max_mhz: float | None = None
    lost: bool = False
    lost_retry_at: float = 0.0
    lost_failures: int = 0


class GpuCollector:
    """Polls every local GPU; returns a GpusSample (status says why there are none)."""

    name = "gpu"

    def __init__(
        self,
        nvml: Nvml | None = None,
        *,
        xid_events: bool = True,
        retry_base_s: float = 2.0,
        retry_max_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nvml: Nvml = pynvml if nvml is None else nvml
        self._xid_events = xid_events
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nvml")
        self._initialized = False
        self._devices: list[_Device] = []
        self._driver_version: str | None = None
        self._status: GpusSample | None = None  # the no-GPU status while init is backing off
        self._init_failures = 0
        self._init_retry_at = 0.0
        self._xid_lock = threading.Lock()
        self._xid: dict[int, int] = {}
        self._xid_stop = threading.Event()
        self._xid_thread: threading.Thread | None = None
        self._closed = False

    # -- public --------------------------------------------------------------------------------
    async def poll(self) -> GpusSample:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.poll_sync)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._shutdown)
        self._executor.shutdown(wait=False)

    def record_xid(self, index: int, xid: int) -> None:
        """Remember the last XID of a GPU (called from the event thread)."""
        with self._xid_lock:
            self._xid[index] = xid

    # -- in the NVML thread --------------------------------------------------------------------
    def poll_sync(self) -> GpusSample:
        now = self._clock()
        if not self._initialized:
            if now < self._init_retry_at and self._status is not None:
                return GpusSample(taken_at=now, status=self._status.status, message=self._status.message)
            status = self._init(now)
            if status is not None:
                return status
        try:
            gpus = tuple(self._read_device(d, now) for d in self._devices)
        except DriverGone as e:
            log.warning("NVML lost its driver (%s); re-initializing with backoff", e)
            self._shutdown()
            return self._fail(now, "no_driver", f"NVML lost the driver ({e}); re-initializing")
        return GpusSample(taken_at=now, gpus=gpus, status="ok", driver_version=self._driver_version)

    def _fail(self, now: float, status: Any, message: str) -> GpusSample:
        self._init_failures += 1
        delay = min(self._retry_max_s, self._retry_base_s * 2 ** min(self._init_failures - 1, 20))
        self._init_retry_at = max(now, self._clock()) + delay  # a shutdown may have taken a while
        self._status = GpusSample(taken_at=now, status=status, message=message)
        return self._status

    def _init(self, now: float) -> GpusSample | None:
        """Initialize NVML and read static facts; a GpusSample when there is nothing to poll."""
        nv = self._nvml
        try:
            nv.nvmlInit()
        except Exception as e:
            if isinstance(e, pynvml.NVMLError_LibraryNotFound):
                return self._fail(now, "no_library", "NVML library not found (libnvidia-ml.so.1): "
                                  "no NVIDIA driver is installed on this host")
            if isinstance(e, pynvml.NVMLError_DriverNotLoaded):
                return self._fail(now, "no_driver", "NVIDIA driver not loaded (is the kernel module in?)")
            return self._fail(now, "error", f"NVML init failed: {e}")
        try:
            count = int(nv.nvmlDeviceGetCount())
            self._driver_version = _text(nvml_query(nv.nvmlSystemGetDriverVersion))
            devices = []
            for i in range(count):
                try:
                    handle = nv.nvmlDeviceGetHandleByIndex(i)
                except Exception as e:
                    if isinstance(e, DRIVER_GONE_ERRORS):
                        raise DriverGone(str(e)) from e
                    devices.append(_Device(i, None, lost=True, lost_retry_at=now + self._retry_base_s))
                    continue
                dev = _Device(i, handle)
                try:
                    self._read_static(dev)
                except GpuLost:
                    dev.lost, dev.lost_retry_at = True, now + self._retry_base_s
                devices.append(dev)
        except Exception as e:
            self._safe_shutdown(nv)
            return self._fail(now, "error", f"NVML device enumeration failed: {e}")
        self._devices = devices
        self._initialized = True
        self._init_failures = 0
        self._status = None
        if count == 0:
            self._initialized = False  # retry later: a GPU may be hot-plugged or the driver reloaded
            self._safe_shutdown(nv)
            return self._fail(now, "no_gpus", "NVML found no GPUs on this host")
        if self._xid_events:
            self._start_xid_thread()
        return None

    def _read_static(self, d: _Device) -> None:
        nv = self._nvml
        d.uuid = _text(nvml_query(nv.nvmlDeviceGetUUID, d.handle))
        d.name = _text(nvml_query(nv.nvmlDeviceGetName, d.handle))
        slow = nvml_query(nv.nvmlDeviceGetTemperatureThreshold, d.handle, nv.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)
        shut = nvml_query(nv.nvmlDeviceGetTemperatureThreshold, d.handle, nv.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN)
        mx = nvml_query(nv.nvmlDeviceGetMaxClockInfo, d.handle, nv.NVML_CLOCK_SM)
        d.temp_slowdown_c = float(slow) if slow is not None else None
        d.temp_shutdown_c = float(shut) if shut is not None else None
        d.sm_clock_max_mhz = float(mx) if mx is not None else None

    def _retry_lost(self, d: _Device, now: float) -> None:
        nv = self._nvml
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(d.index)
            d.handle = handle
            self._read_static(d)
            if d.uuid is None:
                raise GpuLost("no uuid")
        except DriverGone:
            raise
        except Exception:
            d.lost_failures += 1
            d.lost_retry_at = now + min(self._retry_max_s, self._retry_base_s * 2 ** min(d.lost_failures, 20))
            return
        log.warning("GPU %d is back (%s)", d.index, d.uuid)
        d.lost, d.lost_failures = False, 0

    def _read_device(self, d: _Device, now: float) -> GpuSample:
        if d.lost and now >= d.lost_retry_at:
            self._retry_lost(d, now)
        if not d.lost:
            try:
                return self._read_live(d)
            except GpuLost as e:
                log.warning("GPU %d (%s) is lost: %s", d.index, d.uuid, e)
                d.lost, d.lost_failures, d.lost_retry_at = True, 0, now + self._retry_base_s
        with self._xid_lock:
            xid = self._xid.get(d.index)
        return GpuSample(
            node="local", index=d.index, uuid=d.uuid, name=d.name, temp_slowdown_c=d.temp_slowdown_c,
            temp_shutdown_c=d.temp_shutdown_c, sm_clock_max_mhz=d.sm_clock_max_mhz, xid=xid, status="lost",
        )

    def _read_live(self, d: _Device) -> GpuSample:
        nv, h, q = self._nvml, d.handle, nvml_query
        util = q(nv.nvmlDeviceGetUtilizationRates, h)
        mem = q(nv.nvmlDeviceGetMemoryInfo, h)
        temp = q(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU)
        power = q(nv.nvmlDeviceGetPowerUsage, h)
        limit = q(nv.nvmlDeviceGetEnforcedPowerLimit, h)
        sm = q(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM)
        # the newer name first (drivers from 535 on); the older one stays for older nvidia-ml-py
        reasons_fn = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
        reasons_fn = reasons_fn or nv.nvmlDeviceGetCurrentClocksThrottleReasons
        reasons = q(reasons_fn, h)
        fan = q(nv.nvmlDeviceGetFanSpeed, h)
        ecc = q(nv.nvmlDeviceGetTotalEccErrors, h, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC)
        rows = q(nv.nvmlDeviceGetRemappedRows, h)
        replay = q(nv.nvmlDeviceGetPcieReplayCounter, h)
        procs = q(nv.nvmlDeviceGetComputeRunningProcesses, h)
        gprocs = q(nv.nvmlDeviceGetGraphicsRunningProcesses, h)
        pids = {getattr(p, "pid", None) for p in (procs or ())} | {getattr(p, "pid", None) for p in (gprocs or ())}
        with self._xid_lock:
            xid = self._xid.get(d.index)
        used, total = _num(getattr(mem, "used", None), MIB), _num(getattr(mem, "total", None), MIB)
        mig = self._read_mig(h)
        if mig:
            # the same rule as dcgm-exporter's pages: a MIG GPU's memory is the sum over its instances
            mig_used, mig_total = mig_memory_mib(mig)
            used, total = mig_used if mig_used is not None else used, mig_total if mig_total is not None else total
        return GpuSample(
            node="local",
            index=d.index,
            uuid=d.uuid,
            name=d.name,
            util_pct=_num(getattr(util, "gpu", None)),
            mem_util_pct=_num(getattr(util, "memory", None)),
            mem_used_mib=used,
            mem_total_mib=total,
            temp_c=_num(temp),
            temp_slowdown_c=d.temp_slowdown_c,
            temp_shutdown_c=d.temp_shutdown_c,
            power_w=_num(power, 1000),
            power_limit_w=_num(limit, 1000),
            sm_clock_mhz=_num(sm),
            sm_clock_max_mhz=d.sm_clock_max_mhz,
            throttle=decode_reasons(reasons),
            fan_pct=_num(fan),
            ecc_uncorrected=int(ecc) if ecc is not None else None,
            remapped_rows=int(rows[0]) + int(rows[1]) if rows else None,
            remapped_rows_uncorrectable=int(rows[1]) if rows else None,
            pcie_replay=int(replay) if replay is not None else None,
            processes=len(pids - {None}) if procs is not None or gprocs is not None else None,
            xid=xid,
            status="ok",
            mig=mig,
        )

    def _read_mig(self, h: Any) -> tuple[MigInstance, ...] | None:
        """The GPU instances of a GPU in MIG mode; None when MIG is off or not supported (most GPUs).

        NVML has a MIG device per compute instance; the compute instances of one GPU instance share its
        memory, so each GPU instance is listed once. NVML gives no utilization per MIG device (DCGM's
        profiling fields do), so an instance's util is n/a here."""
        nv, q = self._nvml, nvml_query
        mode = q(nv.nvmlDeviceGetMigMode, h)  # [current, pending]; NotSupported -> None
        if not mode or int(mode[0]) != nv.NVML_DEVICE_MIG_ENABLE:
            return None
        found: dict[int, MigInstance] = {}
        for slot in range(int(q(nv.nvmlDeviceGetMaxMigDeviceCount, h) or 0)):
            mh = q(nv.nvmlDeviceGetMigDeviceHandleByIndex, h, slot)  # NotFound: an empty slot
            gi = None if mh is None else q(nv.nvmlDeviceGetGpuInstanceId, mh)
            if gi is None or int(gi) in found:
                continue
            mem = q(nv.nvmlDeviceGetMemoryInfo, mh)
            found[int(gi)] = MigInstance(
                int(gi), mig_profile(_text(q(nv.nvmlDeviceGetName, mh))),
                _num(getattr(mem, "used", None), MIB), _num(getattr(mem, "total", None), MIB),
            )
        return tuple(found[k] for k in sorted(found))

    # -- XID events ----------------------------------------------------------------------------
    def _start_xid_thread(self) -> None:
        nv = self._nvml
        try:
            es = nv.nvmlEventSetCreate()
        except Exception as e:
            log.info("NVML event set unavailable, no XID events: %s", e)
            return
        registered = 0
        for d in self._devices:
            if d.handle is None:
                continue
            try:
                nv.nvmlDeviceRegisterEvents(d.handle, XID_EVENT, es)
                registered += 1
            except Exception as e:
                log.info("GPU %d: no XID events (%s)", d.index, e)
        if not registered:
            self._safe_call(nv.nvmlEventSetFree, es)
            return
        self._xid_stop.clear()
        t = threading.Thread(target=self._xid_loop, args=(nv, es), name="nvml-xid", daemon=True)
        self._xid_thread = t
        t.start()

    def _xid_loop(self, nv: Any, es: Any) -> None:
        """Wait on the event set in short slices so a stop request is seen within half a second."""
        try:
            while not self._xid_stop.is_set():
                try:
                    data = nv.nvmlEventSetWait_v2(es, 500)
                except Exception as e:
                    if isinstance(e, pynvml.NVMLError_Timeout):
                        continue
                    if isinstance(e, DRIVER_GONE_ERRORS):
                        return
                    self._xid_stop.wait(0.5)  # GPU lost etc.: keep listening for the others
                    continue
                if int(getattr(data, "eventType", 0)) & XID_EVENT:
                    idx = self._index_of(nv, getattr(data, "device", None))
                    if idx is not None:
                        xid = int(getattr(data, "eventData", 0))
                        log.warning("GPU %d: XID %d", idx, xid)
                        self.record_xid(idx, xid)
        finally:
            self._safe_call(nv.nvmlEventSetFree, es)

    def _index_of(self, nv: Any, handle: Any) -> int | None:
        try:
            return int(nv.nvmlDeviceGetIndex(handle))
        except Exception:
            for d in self._devices:
                if d.handle is handle:
                    return d.index
            return None

    # -- shutdown ------------------------------------------------------------------------------
    def _stop_xid_thread(self) -> None:
        t, self._xid_thread = self._xid_thread, None
        if t is not None:
            self._xid_stop.set()
            t.join(timeout=5)

    def _shutdown(self) -> None:
        self._stop_xid_thread()
        if self._initialized:
            self._safe_shutdown(self._nvml)
        self._initialized = False
        self._devices = []

    @staticmethod
    def _safe_shutdown(nv: Any) -> None:
        GpuCollector._safe_call(nv.nvmlShutdown)

    @staticmethod
    def _safe_call(fn: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(Exception):
            fn(*args)


def mig_profile(name: str | None) -> str:
    """The GPU instance profile from a MIG device's NVML name: "NVIDIA A100-SXM4-40GB MIG 3g.20gb" ->
    "3g.20gb"; a compute instance's "... MIG 1c.3g.20gb" -> "3g.20gb" (dcgm-exporter's GPU_I_PROFILE)."""
    words = (name or "").split()
    if not words:
        return ""
    profile = words[-1]
    head, _, rest = profile.partition(".")
    return rest if head.endswith("c") and head[:-1].isdigit() and rest else profile


def _num(v: Any, div: float = 1.0) -> float | None:
    if v is None:
        return None
    try:
        return float(v) / div
    except (TypeError, ValueError):
        return None
