"""How run states look, the same in the CLI and the TUI (Rich style names)."""

from workbench.store.models import RunStatus

STATUS_STYLE = {
    RunStatus.QUEUED: "cyan",
    RunStatus.RUNNING: "yellow",
    RunStatus.SUCCEEDED: "green",
    RunStatus.FAILED: "red",
    RunStatus.CANCELLED: "magenta",
    RunStatus.INTERRUPTED: "bright_red",
}
