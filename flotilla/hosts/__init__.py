"""Host interfaces: what a guest can reach beyond its own memory, one module per interface.

Each module holds the interface's pooled client, the bridges from its WIT functions to that
client, and its `INTERFACE` (`interface.py` says what that declares); `registry.py` lists
them. `clients.HostClients` builds every client once per process.
"""
