"""Reconciliation: a PSP's settlement report set against the bridge's payments and the
wallet's journal.

`layouts` reads each PSP's published CSV layout into `ReportLine`s (decimal strings become
integer minor units at that edge), `matcher` classifies every line and every payment the PSP
should have reported (pure, no I/O), `store` reads our side and records each import once per
report content hash, `output` writes the findings CSV and the summary, and `service` is the
use case the `gateway-bridge reconcile` command runs.
"""
