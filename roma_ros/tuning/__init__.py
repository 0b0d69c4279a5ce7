"""`roma tune`: re-train the speak head on a deployment's own annotated bags (docs/tuning.md)."""
