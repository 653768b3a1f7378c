"""Model construction: tiny offline models and (later) loaders for real checkpoints."""
