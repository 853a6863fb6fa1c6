"""Serving: the engine (no HTTP) and the BentoML service."""
