"""Trust errors."""

from __future__ import annotations

from tabard.core.errors import BadRequest, Conflict, Forbidden, NotFound


class BindingNotFound(NotFound):
    code = "BINDING_NOT_FOUND"
    title = "Binding not found"


class BindingAlreadyExists(Conflict):
    code = "BINDING_ALREADY_EXISTS"
    title = "The agent already has a binding"


class BindingStateConflict(Conflict):
    code = "BINDING_STATE_CONFLICT"
    title = "The binding is not in a state that allows this"


class BindingScopeExceedsCapabilities(BadRequest):
    code = "BINDING_SCOPE_EXCEEDS_CAPABILITIES"
    title = "A binding's scope must be within the agent's capabilities"


class BindingRevoked(Forbidden):
    """An agent's token is refused: its org requires a binding and it has no approved one."""

    code = "BINDING_REVOKED"
    title = "The agent's binding is not approved"


class InviteNotFound(NotFound):
    code = "INVITE_NOT_FOUND"
    title = "Invite not found"


class InviteInvalid(Forbidden):
    """Unknown, used, expired, revoked, or of the other kind: never accepted, never consumed."""

    code = "INVITE_INVALID"
    title = "The invite is not valid"


class InviteStateConflict(Conflict):
    code = "INVITE_STATE_CONFLICT"
    title = "The invite can no longer be revoked"
