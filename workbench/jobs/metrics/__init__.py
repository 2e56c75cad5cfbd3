"""Sample-quality and classification metrics."""
