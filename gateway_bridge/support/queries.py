"""SQL of the support commands (walletctl) that is not about incidents: a player's
payments, attention taken off a payment by hand, and an inbox event's fate."""

PLAYER_PAYMENTS = """
SELECT id, direction, state, psp, method, currency, amount_minor, settled_minor,
       psp_reference, attention, created_at, updated_at
FROM bridge.payments WHERE player_id = $1 ORDER BY created_at DESC LIMIT $2"""

# updated_at stays: the payment's outcome did not change, and the incident rules window on
# it (a dismissed mismatch must not look like a fresh one).
CLEAR_ATTENTION = """
UPDATE bridge.payments SET attention = NULL
WHERE id = $1 AND attention IS NOT NULL
RETURNING id"""

INBOX_EVENT_STATUS = "SELECT status, last_error FROM bridge.inbox WHERE id = $1"

# Settlements support stored for a payment before (any outcome), oldest first.
SUPPORT_EVENTS = """
SELECT id, event_key, status FROM bridge.inbox
WHERE payment_id = $1 AND source = 'support' ORDER BY id"""
