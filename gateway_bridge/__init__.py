"""Gateway bridge: PSP webhooks in, wallet gRPC out (issue 3; not built yet)."""
