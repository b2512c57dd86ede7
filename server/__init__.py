"""The gRPC server (see docs/server.md).

gRPC settings applied before grpc is first imported: the EventEngine listener and endpoints
(grpcio's default since 1.6x) hand every unary call between more threads than the older iomgr
path. On the project's 2-core VMs that was ~16 → ~12 context switches per call and 8-15 % more
calls/s at saturation, for the empty handler and for GetAvailability alike (bench/README.md,
"gRPC settings"). A `GRPC_EXPERIMENTS` set by the operator wins.
"""

import os

GRPC_EXPERIMENTS_DEFAULT = "-event_engine_listener,-event_engine_for_all_other_endpoints"
os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS_DEFAULT)
