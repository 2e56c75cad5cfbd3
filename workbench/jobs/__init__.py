"""What runs: job specs, the worker, the RunContext, experiment kinds and their building blocks."""
