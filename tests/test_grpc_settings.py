"""The server's gRPC settings (server/__init__.py): a default GRPC_EXPERIMENTS, set before grpc
loads, that an operator's own value overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from server import GRPC_EXPERIMENTS_DEFAULT

REPO = Path(__file__).resolve().parent.parent
PROBE = "import os, server, grpc; print(os.environ['GRPC_EXPERIMENTS'])"


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def test_server_sets_the_default_before_grpc_loads() -> None:
    assert _probe() == GRPC_EXPERIMENTS_DEFAULT
    assert "-event_engine_listener" in GRPC_EXPERIMENTS_DEFAULT


def test_the_operators_value_wins() -> None:
    assert _probe(GRPC_EXPERIMENTS="event_engine_listener") == "event_engine_listener"
