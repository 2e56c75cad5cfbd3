"""Diffusion building blocks: noise schedules, denoisers, guidance, samplers and the training loop."""
