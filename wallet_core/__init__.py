"""Wallet core: the gRPC service that owns player money (see README.md)."""
