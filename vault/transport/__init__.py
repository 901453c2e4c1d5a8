"""Transports between the keyholder and the authority (in-process now; HTTPS later)."""
