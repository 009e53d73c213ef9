"""Support tooling behind walletctl: settling payments by hand, a player's view, incident
reports."""
