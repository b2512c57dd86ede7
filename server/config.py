"""Server configuration: one frozen Struct, filled from CLI flags or OMNISTOCK_* variables.

Every limit the server enforces is a named field here (defaults in `server.limits`-style
constants below), so tests and operators can see and change them in one place.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["ServerConfig", "Durability"]

Durability = Literal["sync", "async", "none"]

# Defaults: limits the server applies at the edge.
MESSAGE_BYTES_MAX = 16 * 1024 * 1024
CONCURRENT_RPCS_MAX = 1_024
QUEUE_COMMANDS_MAX = 65_536  # commands waiting for the sequencer; past this: RESOURCE_EXHAUSTED
SNAPSHOT_INTERVAL_S = 300.0
SNAPSHOT_JOURNAL_ENTRIES = 1_000_000
ASYNC_FSYNC_INTERVAL_MS = 5
SHUTDOWN_GRACE_S = 10.0
STORE_WAIT_S = 10.0  # at start, how long to wait for an unreachable snapshot store
JOURNAL_SEGMENT_BYTES = 64 * 1024 * 1024
STREAM_MAXLEN = 100_000  # issue 6: journal stream entries kept in Redis (XADD MAXLEN ~)
PUBLISH_QUEUE_MAX = 100_000  # journal entries waiting for Redis; past this they are dropped
REPLICA_WAIT_S = 120.0  # a replica at start waits this long for a snapshot or the stream's head


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    listen: str = "127.0.0.1:50051"
    data_dir: str = "./data"
    redis_url: str = ""  # snapshots (and, later, streams) in Redis instead of data_dir
    durability: Durability = "sync"
    metrics_listen: str = ""  # "" = no metrics endpoint
    tokens_file: str = ""  # "" = auth off (then the server only binds to loopback)
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""  # set = mTLS (clients must present a cert signed by this CA)
    message_bytes_max: int = MESSAGE_BYTES_MAX
    concurrent_rpcs_max: int = CONCURRENT_RPCS_MAX
    queue_commands_max: int = QUEUE_COMMANDS_MAX
    holds_capacity: int = 0  # reservation arrays sized at start for this many more live holds
    snapshot_interval_s: float = SNAPSHOT_INTERVAL_S
    snapshot_journal_entries: int = SNAPSHOT_JOURNAL_ENTRIES
    async_fsync_interval_ms: int = ASYNC_FSYNC_INTERVAL_MS
    shutdown_grace_s: float = SHUTDOWN_GRACE_S
    redis_prefix: str = "omnistock"  # key prefix of the Redis snapshot store (one writer each)
    store_wait_s: float = STORE_WAIT_S
    journal_segment_bytes: int = JOURNAL_SEGMENT_BYTES
    log_level: str = "INFO"
    port_file: str = ""  # if set, the bound port is written here (for `--listen HOST:0`)
    replica_of: str = ""  # issue 6: a replica tails this primary's Redis
    stream_maxlen: int = STREAM_MAXLEN
    publish_queue_max: int = PUBLISH_QUEUE_MAX
    replica_wait_s: float = REPLICA_WAIT_S
