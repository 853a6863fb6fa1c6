"""The engine: a model bundle in, predictions out. No HTTP, no torch; below every stage that runs a model."""
