"""The Redis backplane: wire format, node bus, lifetime manager, presence and emitter."""
