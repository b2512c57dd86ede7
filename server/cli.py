"""`omnistock`: serve, load FILE, snapshot, stats.

Every `serve` flag also reads an `OMNISTOCK_*` environment variable (flag beats environment beats
default), so `omnistock serve` alone works on a fresh clone and a container is configured by its
environment. The client commands talk to a running server over gRPC (`--target`, `--token`).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "config_from_args"]

DEFAULT_TARGET = "127.0.0.1:50051"
LOAD_CHUNK_ROWS = 1_000  # rows per request; well under REQUEST_LINES_MAX and message limits
RPC_TIMEOUT_S = 30.0

# (flag, config field, env var, type, help)
_SERVE_OPTIONS: tuple[tuple[str, str, type, str], ...] = (
    ("--listen", "listen", str, "HOST:PORT to bind (default 127.0.0.1:50051; port 0 = any)"),
    ("--data-dir", "data_dir", str, "journal and file snapshots (default ./data)"),
    ("--redis", "redis_url", str, "snapshots in Redis, e.g. redis://127.0.0.1:6379/0"),
    ("--replica-of", "replica_of", str, "serve reads as a replica of the primary's Redis URL"),
    ("--durability", "durability", str, "sync (default) | async | none"),
    ("--metrics-listen", "metrics_listen", str, "HOST:PORT for Prometheus metrics (off)"),
    ("--tokens", "tokens_file", str, "bearer tokens file; without it only loopback binds"),
    ("--tls-cert", "tls_cert", str, "server certificate (PEM)"),
    ("--tls-key", "tls_key", str, "server private key (PEM)"),
    ("--tls-client-ca", "tls_client_ca", str, "CA of client certificates (mTLS)"),
    ("--snapshot-interval-s", "snapshot_interval_s", float, "seconds between snapshots"),
    ("--snapshot-journal-entries", "snapshot_journal_entries", int, "entries between snapshots"),
    ("--queue-commands-max", "queue_commands_max", int, "write queue bound, in commands"),
    ("--holds-capacity", "holds_capacity", int, "live holds to size the arrays for at start"),
    ("--concurrent-rpcs-max", "concurrent_rpcs_max", int, "concurrent RPCs bound"),
    ("--shutdown-grace-s", "shutdown_grace_s", float, "seconds to drain at shutdown"),
    ("--log-level", "log_level", str, "DEBUG | INFO | WARNING | ERROR"),
    ("--port-file", "port_file", str, "write the bound port to this file (for port 0)"),
)


def _env_name(field: str) -> str:
    return "OMNISTOCK_" + {"redis_url": "REDIS", "tokens_file": "TOKENS"}.get(field, field).upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omnistock", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server")
    for flag, field, kind, text in _SERVE_OPTIONS:
        serve.add_argument(
            flag, dest=field, type=kind, default=None, help=f"{text} [${_env_name(field)}]"
        )

    def client(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text)
        p.add_argument("--target", default=None, help="server HOST:PORT [$OMNISTOCK_TARGET]")
        p.add_argument("--token", default=None, help="bearer token [$OMNISTOCK_TOKEN]")
        p.add_argument("--tls-ca", default=None, help="CA to verify the server (enables TLS)")
        return p

    load = client("load", "bulk import nodes and stock from CSV (see docs/server.md)")
    load.add_argument("files", nargs="+", metavar="FILE")
    load.add_argument("--chunk-rows", type=int, default=LOAD_CHUNK_ROWS)
    load.add_argument("--quiet", action="store_true", help="no progress bar")
    client("snapshot", "take a snapshot now")
    client("stats", "print server statistics as JSON")
    client("health", "exit 0 if the server reports SERVING (a container health probe)")
    return parser


def config_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Any:
    from server.config import ServerConfig

    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for _, field, kind, _ in _SERVE_OPTIONS:
        value = getattr(args, field, None)
        if value is None and _env_name(field) in env:
            raw = env[_env_name(field)]
            try:
                value = kind(raw)
            except ValueError:
                raise SystemExit(
                    f"omnistock: ${_env_name(field)}={raw!r} is not a {kind.__name__}"
                ) from None
        if value is not None:
            values[field] = value
    if values.get("durability", "sync") not in ("sync", "async", "none"):
        raise SystemExit(
            f"omnistock: durability must be sync, async or none, got {values['durability']!r}"
        )
    if values.get("holds_capacity", 0) < 0:
        raise SystemExit(f"omnistock: holds capacity must be >= 0, got {values['holds_capacity']}")
    return ServerConfig(**values)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return _client_command(args)


def _serve(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from server.logging import setup_logging

    setup_logging(config.log_level)
    from server.app import serve

    return serve(config)


# --- client commands ---------------------------------------------------------------------------


def _target(args: argparse.Namespace) -> str:
    if args.target:
        return str(args.target)
    if "OMNISTOCK_TARGET" in os.environ:
        return os.environ["OMNISTOCK_TARGET"]
    if args.command == "health" and "OMNISTOCK_LISTEN" in os.environ:
        # Probe the server of this container on loopback, whatever address it binds.
        return "127.0.0.1:" + os.environ["OMNISTOCK_LISTEN"].rpartition(":")[2]
    return DEFAULT_TARGET


def _channel(args: argparse.Namespace) -> Any:
    import grpc

    target = _target(args)
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    if args.tls_ca:
        creds = grpc.ssl_channel_credentials(Path(args.tls_ca).read_bytes())
        return grpc.secure_channel(target, creds, options=options)
    return grpc.insecure_channel(target, options=options)


def _metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    token = args.token or os.environ.get("OMNISTOCK_TOKEN", "")
    return [("authorization", f"Bearer {token}")] if token else []


def _client_command(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf import json_format

    from omnistock.v1 import admin_pb2, admin_pb2_grpc

    try:
        with _channel(args) as channel:
            if args.command == "load":
                return _load(channel, args)
            if args.command == "health":
                from grpc_health.v1 import health_pb2, health_pb2_grpc

                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), metadata=_metadata(args), timeout=3.0
                )
                serving = reply.status == health_pb2.HealthCheckResponse.SERVING
                print(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
                return 0 if serving else 1
            stub = admin_pb2_grpc.AdminServiceStub(channel)
            md = _metadata(args)
            if args.command == "snapshot":
                reply = stub.Snapshot(admin_pb2.SnapshotRequest(), metadata=md, timeout=300)
            else:
                reply = stub.GetStats(
                    admin_pb2.GetStatsRequest(), metadata=md, timeout=RPC_TIMEOUT_S
                )
            out = json_format.MessageToDict(
                reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            print(json.dumps(out, indent=2))
            return 0
    except grpc.RpcError as exc:
        print(f"omnistock {args.command}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"omnistock {args.command}: {exc}", file=sys.stderr)
        return 1


# --- load ------------------------------------------------------------------------------------

_NODE_TYPES = {"dc": 1, "store": 2, "dark_store": 3, "third_party": 4, "marketplace": 5}
_TRUE = {"1", "true", "yes", "y", "t"}


def _bool(value: str, default: bool) -> bool:
    value = value.strip().lower()
    return default if not value else value in _TRUE


class _Progress:
    """A one-line text progress bar on stderr."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = max(1, total)
        self.done = 0
        self.quiet = quiet or not sys.stderr
        self.started = time.monotonic()

    def advance(self, rows: int) -> None:
        self.done += rows
        if self.quiet:
            return
        width = 30
        filled = int(width * self.done / self.total)
        rate = self.done / max(1e-9, time.monotonic() - self.started)
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {100 * self.done // self.total:3d}% "
            f"{self.done}/{self.total} rows {rate:,.0f} rows/s"
        )
        sys.stderr.flush()

    def finish(self) -> None:
        if not self.quiet:
            sys.stderr.write("\n")


def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        if reader.fieldnames is None:
            return []
        fields = [f.strip() for f in reader.fieldnames]
        if "kind" not in fields:
            raise ValueError(f"{path}: the header must have a 'kind' column (node or stock)")
        rows = []
        for line_no, row in enumerate(reader, start=2):
            clean = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            clean["_where"] = f"{path.name}:{line_no}"
            rows.append(clean)
        return rows


def _chunks(rows: list[Any], size: int) -> Iterator[tuple[int, list[Any]]]:
    for index, start in enumerate(range(0, len(rows), size)):
        yield index, rows[start : start + size]


def _load(channel: Any, args: argparse.Namespace) -> int:
    from omnistock.v1 import supply_pb2, supply_pb2_grpc, types_pb2

    stub = supply_pb2_grpc.SupplyServiceStub(channel)
    md = _metadata(args)
    failed_lines = 0
    for name in args.files:
        path = Path(name)
        rows = _read_rows(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        # A load is safe to re-run: the same file gives the same request ids and contents, so
        # the server answers a repeat as a replay. Counts default to the file's mtime as their
        # source sequence, so a newer file's counts win over an older one's.
        default_seq = int(path.stat().st_mtime * 1000)
        nodes = [r for r in rows if r["kind"].lower() == "node"]
        stock = [r for r in rows if r["kind"].lower() == "stock"]
        unknown = [r["_where"] for r in rows if r["kind"].lower() not in ("node", "stock")]
        if unknown:
            raise ValueError(f"unknown kind at {', '.join(unknown[:5])} (expected node or stock)")
        progress = _Progress(len(rows), args.quiet)
        prefix = f"load:{path.name}:{digest}"
        for index, chunk in _chunks(nodes, args.chunk_rows):
            request = supply_pb2.UpsertNodesRequest(
                request_id=f"{prefix}:nodes:{index}",
                nodes=[_node(types_pb2, r) for r in chunk],
            )
            reply = stub.UpsertNodes(request, metadata=md, timeout=RPC_TIMEOUT_S)
            failed_lines += _report(chunk, list(reply.statuses), types_pb2)
            progress.advance(len(chunk))
        for index, chunk in _chunks(stock, args.chunk_rows):
            counts = [
                supply_pb2.StockCount(
                    sku=r["sku"],
                    node_id=r["node_id"],
                    on_hand=_int(r, "on_hand"),
                    source_seq=_int(r, "source_seq", default_seq),
                )
                for r in chunk
            ]
            reply = stub.SetOnHand(
                supply_pb2.SetOnHandRequest(request_id=f"{prefix}:stock:{index}", counts=counts),
                metadata=md,
                timeout=RPC_TIMEOUT_S,
            )
            failed_lines += _report(chunk, [x.status for x in reply.results], types_pb2)
            safety = [r for r in chunk if r.get("safety_stock")]
            if safety:
                stub.SetSafetyStock(
                    supply_pb2.SetSafetyStockRequest(
                        request_id=f"{prefix}:safety:{index}",
                        safety_stocks=[
                            supply_pb2.SafetyStock(
                                sku=r["sku"],
                                node_id=r["node_id"],
                                safety_stock=_int(r, "safety_stock"),
                            )
                            for r in safety
                        ],
                    ),
                    metadata=md,
                    timeout=RPC_TIMEOUT_S,
                )
            progress.advance(len(chunk))
        progress.finish()
        print(f"{path}: {len(nodes)} nodes, {len(stock)} stock rows", file=sys.stderr)
    if failed_lines:
        print(f"{failed_lines} rows were not applied (see above)", file=sys.stderr)
        return 1
    return 0


def _int(row: dict[str, str], field: str, default: int | None = None) -> int:
    raw = row.get(field, "")
    if not raw:
        if default is None:
            raise ValueError(f"{row['_where']}: column {field!r} is required")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{row['_where']}: {field}={raw!r} is not an integer") from None


def _float(row: dict[str, str], field: str) -> float:
    raw = row.get(field, "")
    try:
        return float(raw) if raw else 0.0
    except ValueError:
        raise ValueError(f"{row['_where']}: {field}={raw!r} is not a number") from None


def _node(types_pb2: Any, row: dict[str, str]) -> Any:
    kind = row.get("type", "").lower() or "store"
    if kind not in _NODE_TYPES:
        raise ValueError(f"{row['_where']}: type={kind!r}, expected one of {sorted(_NODE_TYPES)}")
    return types_pb2.Node(
        node_id=row["node_id"],
        type=_NODE_TYPES[kind],
        lat=_float(row, "lat"),
        lon=_float(row, "lon"),
        pickup=_bool(row.get("pickup", ""), False),
        ship=_bool(row.get("ship", ""), True),
        enabled=_bool(row.get("enabled", ""), True),
        priority=_int(row, "priority", 0),
        daily_capacity=_int(row, "daily_capacity", 0),
        name=row.get("name", ""),
    )


def _report(chunk: list[dict[str, str]], statuses: list[int], types_pb2: Any) -> int:
    bad = 0
    ok = types_pb2.LINE_STATUS_OK
    for row, status in zip(chunk, statuses, strict=False):
        if status != ok:
            bad += 1
            if bad <= 20:
                name = types_pb2.LineStatus.Name(status)
                print(f"\n{row['_where']}: {name}", file=sys.stderr)
    return bad


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
