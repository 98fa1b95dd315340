"""The recorder's codec: every recorded class round-trips exactly; files of another schema still load."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from collectors.runner import Reading, SourceError
from collectors.samples import GpuSample, MigInstance, NodeSample, NodeWarning, Source, TrafficSample
from quotas.errors import ErrorKind
from quotas.store import AuditEntry
from surgewatch.recording.codec import CLASSES, CodecError, Decoder, encode, schema
from tui.testing import FROZEN_NOW, frozen_readings


def through_json(value: Any) -> Any:
    return json.loads(json.dumps(encode(value)))


def test_every_sample_of_every_source_round_trips_exactly() -> None:
    """Local GPUs, host, fleet (nodes, GPUs, a down node) and traffic (quotas, histories) come back equal."""
    decoder = Decoder(schema())
    for source, reading in frozen_readings().items():
        sample = reading.sample
        assert decoder.decode(type(sample), through_json(sample)) == sample, source
        header = dataclasses.replace(reading, sample=None)
        assert decoder.decode(Reading, through_json(header)) == header


def test_nested_classes_tuples_enums_and_errors_come_back_as_their_types() -> None:
    """MIG instances, warnings, throttle tuples, StrEnum error kinds and audit entries: types, not JSON lists."""
    gpu = GpuSample("http://n1:9400/metrics", 3, throttle=("thermal", "power_cap"), xid=48,
                    mig=(MigInstance(1, "3g.40gb", 100.0, 40000.0, 55.0),), tensor_active_pct=12.5)
    node = NodeSample("http://n1:9400/metrics", "up", None, 2.5, FROZEN_NOW, FROZEN_NOW, (gpu,),
                      **({"warnings": (NodeWarning(3, "power_w", "range", "GPU 3: power out of range"),)}
                         if "warnings" in {f.name for f in dataclasses.fields(NodeSample)} else {}))
    err = SourceError(ErrorKind.AUTH_FAILED, "Redis refused the login")
    quota = frozen_readings()[Source.TRAFFIC].sample.tiers[1].quota  # type: ignore[union-attr]  # the frozen traffic has quotas
    entry = AuditEntry("1-0", "free", "alice@10.0.0.7", FROZEN_NOW, 8, quota, quota, "surge", "set", 123)
    d = Decoder()
    back = d.decode(NodeSample, through_json(node))
    assert back == node and isinstance(back.gpus[0].throttle, tuple) and isinstance(back.gpus[0].mig, tuple)
    back_err = d.decode(SourceError, through_json(err))
    assert back_err == err and back_err.kind is ErrorKind.AUTH_FAILED
    assert d.decode(AuditEntry, through_json(entry)) == entry


def test_a_file_without_a_newer_field_loads_with_its_default_and_drops_a_removed_one() -> None:
    """An old recording (GpuSample without `mig`/`tensor_active_pct`, plus a field since removed) still loads."""
    current = schema()["GpuSample"]
    old_fields = [f for f in current if f not in ("mig", "tensor_active_pct")] + ["retired_field"]
    gpu = GpuSample("local", 0, name="NVIDIA L4", temp_c=61.0, throttle=("thermal",))
    row = dict(zip(current, through_json(gpu), strict=True))
    row["retired_field"] = "whatever"
    stored = [row[f] for f in old_fields]
    back = Decoder({**schema(), "GpuSample": old_fields}).decode(GpuSample, stored)
    assert back == dataclasses.replace(gpu, mig=None, tensor_active_pct=None)


def test_a_value_that_does_not_fit_is_a_codec_error() -> None:
    """A foreign or corrupt value raises CodecError (the reader turns it into exit 2), never a half object."""
    with pytest.raises(CodecError):
        Decoder().decode(TrafficSample, [1.0, [], {}, "extra", "fields"])
    with pytest.raises(CodecError):
        Decoder().decode(TrafficSample, {"taken_at": 1.0})


def test_the_schema_names_every_class_the_console_renders_from() -> None:
    names = {c.__name__ for c in CLASSES}
    assert {"GpuSample", "GpusSample", "HostSample", "NodeSample", "FleetSample", "TierTraffic", "TrafficSample",
            "Quota", "SourceError", "AuditEntry", "Reading"} <= names
