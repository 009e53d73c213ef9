"""`python -m wallet_core` is the `wallet-core` command."""

from wallet_core.cli import main

main()
