"""The wire between a keyholder and a remote authority (docs/server.md)."""
