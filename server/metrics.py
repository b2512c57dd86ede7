"""Prometheus metrics of one server, on a registry of its own (so tests can run many servers).

The RPC wrapper (`server.interceptors`) records every RPC (latency per method and final code,
in-flight count); the sequencer reports batch sizes and fsync latency; the snapshotter reports
snapshot age and size. The HTTP endpoint runs on its own port (`--metrics-listen`), never on the
gRPC port.

RPC figures are plain Python numbers per method (`RpcSeries`), bumped on the event loop and
turned into the `omnistock_rpc_duration_seconds` histogram and the `omnistock_rpc_in_flight`
gauge only when scraped: a `prometheus_client` child costs ~10 µs per call in label look-ups,
locks and a Python loop over the buckets, which was a tenth of an empty gRPC call. The
sequencer's histograms (observed on the loop, once per batch) are kept the same way.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

__all__ = ["Metrics", "RpcSeries", "parse_listen"]

# Latency buckets from 50 µs (a cached read) to 10 s (a deadline-bound write under overload).
_RPC_SECONDS_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_BATCH_COMMANDS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)
_FSYNC_SECONDS_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
)  # fmt: skip


_RPC_SECONDS_DOC = (
    "RPC latency from the first byte handled to the final status, by method and code."
)
_RPC_IN_FLIGHT_DOC = "RPCs being handled now."
_RPC_LE = tuple(floatToGoString(b) for b in _RPC_SECONDS_BUCKETS) + ("+Inf",)


class RpcSeries:
    """The RPC figures of one method label. Written only from the event loop; read by the
    scrape thread, which copies each list in one step (atomic under the GIL)."""

    __slots__ = ("method", "in_flight", "codes")

    def __init__(self, method: str) -> None:
        self.method = method
        self.in_flight = 0
        # code -> [count per bucket (last: +Inf)..., sum of seconds, created (unix s)]
        self.codes: dict[str, list[float]] = {}

    def started(self) -> None:
        self.in_flight += 1

    def finished(self, code: str, seconds: float) -> None:
        self.in_flight -= 1
        row = self.codes.get(code)
        if row is None:
            row = self.codes[code] = [0] * len(_RPC_LE) + [0.0, time.time()]
        row[bisect_left(_RPC_SECONDS_BUCKETS, seconds)] += 1
        row[-2] += seconds


class _LoopHistogram:
    """An unlabelled histogram with the exposition of prometheus_client's, kept as plain numbers:
    observe from the event loop only (one writer); scrapes copy the row in one step."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = buckets
        self._le = tuple(floatToGoString(b) for b in buckets) + ("+Inf",)
        self._row: list[float] = [0] * len(self._le) + [0.0]  # counts per bucket, then sum
        self._created = time.time()

    def observe(self, value: float) -> None:
        row = self._row
        row[bisect_left(self._bounds, value)] += 1
        row[-1] += value

    def collect(self) -> Iterator[Metric]:
        row = list(self._row)
        cumulative = 0.0
        buckets = []
        for le, count in zip(self._le, row[: len(self._le)], strict=True):
            cumulative += count
            buckets.append((le, cumulative))
        family = HistogramMetricFamily(self.name, self.documentation, buckets, row[-1])
        family.samples.append(Sample(self.name + "_created", {}, self._created))
        yield family


class _RpcCollector:
    """Exposes every `RpcSeries` as prometheus_client's Histogram and Gauge would."""

    def __init__(self, series: dict[str, RpcSeries]) -> None:
        self._series = series

    def collect(self) -> Iterator[Metric]:
        seconds = HistogramMetricFamily(
            "omnistock_rpc_duration_seconds", _RPC_SECONDS_DOC, labels=["method", "code"]
        )
        in_flight = GaugeMetricFamily(
            "omnistock_rpc_in_flight", _RPC_IN_FLIGHT_DOC, labels=["method"]
        )
        created: list[Sample] = []
        for series in list(self._series.values()):
            in_flight.add_metric([series.method], series.in_flight)
            for code, row in list(series.codes.items()):
                row = list(row)
                cumulative = 0.0
                buckets = []
                for le, count in zip(_RPC_LE, row[: len(_RPC_LE)], strict=True):
                    cumulative += count
                    buckets.append((le, cumulative))
                seconds.add_metric([series.method, code], buckets, row[-2])
                labels = {"method": series.method, "code": code}
                created.append(Sample("omnistock_rpc_duration_seconds_created", labels, row[-1]))
        seconds.samples.extend(created)
        yield seconds
        yield in_flight


def parse_listen(listen: str) -> tuple[str, int]:
    """ "HOST:PORT" (IPv6 as "[::1]:9100") into (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address {listen!r}: expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


class Metrics:
    """Every metric the server exports. Cheap to call from the event loop (no I/O)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._rpc: dict[str, RpcSeries] = {}
        r.register(_RpcCollector(self._rpc))
        # The sequencer observes these on the event loop, once per batch.
        self.batch_commands = _LoopHistogram(
            "omnistock_batch_commands", "Commands per sequencer batch.", _BATCH_COMMANDS_BUCKETS
        )
        self.batch_seconds = _LoopHistogram(
            "omnistock_batch_duration_seconds",
            "Time to apply one sequencer batch through the engine and the journal.",
            _RPC_SECONDS_BUCKETS,
        )
        self.fsync_seconds = _LoopHistogram(
            "omnistock_journal_fsync_duration_seconds",
            "Latency of one journal fsync.",
            _FSYNC_SECONDS_BUCKETS,
        )
        for histogram in (self.batch_commands, self.batch_seconds, self.fsync_seconds):
            r.register(histogram)
        self.snapshot_bytes = Gauge(
            "omnistock_snapshot_bytes", "Size of the last complete snapshot.", registry=r
        )
        self.snapshot_age = Gauge(
            "omnistock_snapshot_age_seconds",
            "Seconds since the last complete snapshot (NaN before the first).",
            registry=r,
        )
        self.snapshot_errors = Counter(
            "omnistock_snapshot_errors", "Failed snapshot attempts.", registry=r
        )
        self._snapshot_at_s = math.nan
        self.snapshot_age.set_function(self._snapshot_age_s)
        self._http: Any = None

    # --- RPCs (recorded by the RPC wrapper of server.interceptors) ---------------------------

    def rpc_series(self, method: str) -> RpcSeries:
        """The figures of one method label (the wrapper looks it up once per method)."""
        series = self._rpc.get(method)
        if series is None:
            series = self._rpc[method] = RpcSeries(method)
        return series

    def rpc_started(self, method: str) -> None:
        self.rpc_series(method).started()

    def rpc_finished(self, method: str, code: str, seconds: float) -> None:
        self.rpc_series(method).finished(code, seconds)

    # --- sequencer, journal, snapshots -----------------------------------------------------

    def observe_batch(self, commands: int, seconds: float) -> None:
        self.batch_commands.observe(commands)
        self.batch_seconds.observe(seconds)

    def observe_fsync(self, seconds: float) -> None:
        self.fsync_seconds.observe(seconds)

    def set_snapshot(self, age_s: float, bytes: int) -> None:  # noqa: A002 (the brief's name)
        self._snapshot_at_s = time.time() - age_s
        self.snapshot_bytes.set(bytes)

    def count_snapshot_error(self) -> None:
        self.snapshot_errors.inc()

    def _snapshot_age_s(self) -> float:
        return time.time() - self._snapshot_at_s

    # --- export ----------------------------------------------------------------------------

    def start_http(self, listen: str) -> int:
        """Serve /metrics on `listen` ("HOST:PORT", port 0 = any) in a daemon thread; returns
        the port bound."""
        host, port = parse_listen(listen)
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_port)

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
