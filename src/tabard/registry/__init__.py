"""The agent registry: agents, their DIDs and keys, A2A agent cards, discovery."""
