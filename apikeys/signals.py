"""What other apps may listen to. ``key_revoked(key_id, user_id)`` is sent after the
revoke commits; the realtime side closes the key's open connections on it (this
app imports neither ``generation`` nor ``notifications``)."""
from __future__ import annotations

from django.dispatch import Signal

key_revoked = Signal()
