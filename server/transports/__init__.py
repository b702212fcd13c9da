"""The SignalR transports."""
