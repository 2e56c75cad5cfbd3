"""The Textual TUI: runs browser, run detail, queue, new experiment, compare, export."""
