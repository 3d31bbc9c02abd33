"""Who may manage signing keys: the platform admin only (they sign for every org)."""

from __future__ import annotations

from tabard.core.context import Actor
from tabard.tenancy.policy import require_platform_admin


def require_key_management(actor: Actor) -> None:
    """List and rotate signing keys: the platform admin; anyone else gets 403."""
    require_platform_admin(actor)
