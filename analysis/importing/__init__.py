"""From an extraction sheet (one row per comparison) to a dataset folder that passes validation."""
