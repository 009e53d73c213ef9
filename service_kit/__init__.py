"""Code shared by the wallet core and the gateway bridge: migrations, logging, settings
(and secrets from files), serving until a stop signal, Postgres helpers, FX arithmetic."""
