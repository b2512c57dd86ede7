"""`omnistock load FILE` end to end: the CSV's nodes and stock reach a running server, a re-run of
the same file is answered as replays (nothing applied twice), refused rows are reported with their
file line and exit code 1, and a malformed file changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc

from omnistock.v1 import (
    availability_pb2,
    availability_pb2_grpc,
    supply_pb2,
    supply_pb2_grpc,
    types_pb2,
)
from tests.server_process import REPO, ServerProcess

CSV = """\
kind,node_id,type,lat,lon,pickup,name,sku,on_hand,safety_stock
node,dc1,dc,52.52,13.40,no,Berlin DC,,,
node,st1,store,48.14,11.58,yes,Munich,,,
stock,dc1,,,,,,sku-1,100,5
stock,st1,,,,,,sku-1,7,
stock,st1,,,,,,sku-2,3,1
"""


def _load(target: str, *files: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OMNISTOCK_TARGET", None)
    return subprocess.run(
        [sys.executable, "-m", "server", "load", "--target", target, "--quiet", *map(str, files)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _stock(target: str) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(sku, node) → (on_hand, safety, available) for every position the CSV names."""
    keys = [("sku-1", "dc1"), ("sku-1", "st1"), ("sku-2", "st1"), ("sku-2", "dc1")]
    with grpc.insecure_channel(target) as channel:
        stub = availability_pb2_grpc.AvailabilityServiceStub(channel)
        reply = stub.GetAvailability(
            availability_pb2.GetAvailabilityRequest(
                queries=[availability_pb2.AvailabilityQuery(sku=s, node_id=n) for s, n in keys]
            ),
            timeout=10,
        )
    return {
        key: (r.quantities.on_hand, r.quantities.safety_stock, r.quantities.available)
        for key, r in zip(keys, reply.results, strict=True)
    }


def test_load_imports_nodes_and_stock_and_is_safe_to_rerun(tmp_path: Path) -> None:
    data = tmp_path / "stock.csv"
    data.write_text(CSV)
    with ServerProcess(tmp_path / "data", durability="none") as server:
        done = _load(server.target, data)
        assert done.returncode == 0, done.stderr
        assert "2 nodes, 3 stock rows" in done.stderr
        expected = {
            ("sku-1", "dc1"): (100, 5, 95),
            ("sku-1", "st1"): (7, 0, 7),
            ("sku-2", "st1"): (3, 1, 2),
            ("sku-2", "dc1"): (0, 0, 0),
        }
        assert _stock(server.target) == expected

        # A POS sale lands after the load; re-running the same file must not overwrite it
        # (the same request ids are replays, not new counts).
        with grpc.insecure_channel(server.target) as channel:
            supply = supply_pb2_grpc.SupplyServiceStub(channel)
            supply.Adjust(
                supply_pb2.AdjustRequest(
                    request_id="pos-1",
                    adjustments=[
                        supply_pb2.Adjustment(
                            sku="sku-1",
                            node_id="st1",
                            delta=-2,
                            reason=types_pb2.ADJUST_REASON_SALE,
                        )
                    ],
                ),
                timeout=10,
            )
        again = _load(server.target, data)
        assert again.returncode == 0, again.stderr
        expected[("sku-1", "st1")] = (5, 0, 5)
        assert _stock(server.target) == expected


def test_load_reports_refused_rows_and_rejects_malformed_files(tmp_path: Path) -> None:
    refused = tmp_path / "refused.csv"
    refused.write_text("kind,node_id,sku,on_hand\nstock,nowhere,sku-9,4\n")
    malformed = tmp_path / "malformed.csv"
    malformed.write_text("kind,node_id,type,sku,on_hand\nnode,x1,spaceship,,\n")
    no_kind = tmp_path / "no-kind.csv"
    no_kind.write_text("node_id,sku,on_hand\nst1,sku-1,4\n")
    with ServerProcess(tmp_path / "data", durability="none") as server:
        done = _load(server.target, refused)
        assert done.returncode == 1
        assert "refused.csv:2: LINE_STATUS_UNKNOWN_NODE" in done.stderr
        assert "1 rows were not applied" in done.stderr

        bad = _load(server.target, malformed)
        assert bad.returncode == 1
        assert "malformed.csv:2: type='spaceship'" in bad.stderr
        missing = _load(server.target, no_kind)
        assert missing.returncode == 1
        assert "must have a 'kind' column" in missing.stderr
        with grpc.insecure_channel(server.target) as channel:
            stub = availability_pb2_grpc.AvailabilityServiceStub(channel)
            reply = stub.GetAvailability(
                availability_pb2.GetAvailabilityRequest(
                    queries=[availability_pb2.AvailabilityQuery(sku="sku-9", node_id="nowhere")]
                ),
                timeout=10,
            )
        assert reply.results[0].quantities.on_hand == 0
