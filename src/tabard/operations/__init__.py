"""Operations: registration tokens, agent instances and heartbeats, presence, commands and
actions, one-time secrets."""
