"""How run states look, the same in the CLI and the TUI (Rich style names)."""

STATUS_STYLE = {
    "queued": "cyan",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "interrupted": "bright_red",
}
