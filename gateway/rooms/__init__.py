"""Rooms and participants: the runtime model and the service every API surface calls."""
