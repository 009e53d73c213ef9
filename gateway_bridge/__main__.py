"""`python -m gateway_bridge` is `gateway-bridge`."""

from gateway_bridge.cli import main

main()
