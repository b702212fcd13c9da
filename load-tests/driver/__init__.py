"""The load driver: picows connections over several processes, HDR histograms, /proc sampling.

``adapters`` speaks the protocols (bare WebSocket, SignalR JSON and MessagePack, Socket.IO v4),
``worker`` is one driver process, ``fanout`` spreads connections over processes and merges
what they measured, ``procstat`` reads the servers' CPU time and memory from /proc.
"""
