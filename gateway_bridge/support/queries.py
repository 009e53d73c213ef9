"""SQL of the support commands (walletctl) that is not about incidents: a player's
payments, attention taken off a payment by hand, and an inbox event's fate."""

PLAYER_PAYMENTS = """
SELECT id, direction, state, psp, method, currency, amount_minor, settled_minor,
       psp_reference, attention, created_at, updated_at
FROM bridge.payments WHERE player_id = $1 ORDER BY created_at DESC LIMIT $2"""

CLEAR_ATTENTION = """
UPDATE bridge.payments SET attention = NULL, updated_at = now()
WHERE id = $1 AND attention IS NOT NULL
RETURNING id"""

INBOX_EVENT_STATUS = "SELECT status, last_error FROM bridge.inbox WHERE id = $1"

SUPPORT_EVENT = "SELECT id FROM bridge.inbox WHERE psp = $1 AND event_key = $2"
