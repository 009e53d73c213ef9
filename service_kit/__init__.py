"""Code shared by the wallet core and the gateway bridge: migrations, logging, settings."""
