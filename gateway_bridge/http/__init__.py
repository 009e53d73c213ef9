"""The bridge's HTTP edge (aiohttp): cashier REST, PSP webhooks, health."""
