"""omnistock gRPC API: generated protobuf and gRPC code (see proto/README.md)."""
