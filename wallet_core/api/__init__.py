"""The gRPC edge: request conversion, auth, the error table, the servicer."""
