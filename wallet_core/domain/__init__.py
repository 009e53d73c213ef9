"""The wallet's money rules in plain Python: no I/O, no asyncpg, no grpc imports."""
