"""Pure payment rules of the bridge: no I/O, no aiohttp, no asyncpg, no grpc."""
