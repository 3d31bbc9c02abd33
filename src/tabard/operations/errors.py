"""Operations errors."""

from __future__ import annotations

from tabard.core.errors import Conflict, NotFound, Unauthenticated


class RegistrationTokenNotFound(NotFound):
    code = "REGISTRATION_TOKEN_NOT_FOUND"
    title = "Registration token not found"


class RegistrationTokenInvalid(Unauthenticated):
    """Unknown, used, expired or revoked: never accepted, nothing created."""

    code = "REGISTRATION_TOKEN_INVALID"
    title = "The registration token is not valid"


class RegistrationTokenStateConflict(Conflict):
    code = "REGISTRATION_TOKEN_STATE_CONFLICT"
    title = "The registration token can no longer be revoked"


class CommandNotFound(NotFound):
    code = "COMMAND_NOT_FOUND"
    title = "Command not found"


class ActionNotFound(NotFound):
    code = "ACTION_NOT_FOUND"
    title = "The agent has not declared this action"


class CommandAlreadyCompleted(Conflict):
    code = "COMMAND_ALREADY_COMPLETED"
    title = "The command has already completed"


class CommandInvalidTransition(Conflict):
    code = "COMMAND_INVALID_TRANSITION"
    title = "The command cannot move to that state"


class CommandNotRetryable(Conflict):
    code = "COMMAND_NOT_RETRYABLE"
    title = "Only failed or expired ACTION_EXECUTE commands can be retried"


class CommandPrepareRequired(Conflict):
    code = "COMMAND_PREPARE_REQUIRED"
    title = "This action needs a succeeded ACTION_PREPARE first"


class NoOnlineInstance(Conflict):
    code = "NO_ONLINE_INSTANCE"
    title = "The agent has no online instance"
