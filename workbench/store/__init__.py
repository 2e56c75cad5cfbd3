"""What persists: the SQLite store (experiments, runs, metrics, artifacts, tables, events) and its queue."""
