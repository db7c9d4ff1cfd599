"""Diffusion: model-free noise schedules and samplers (the diffusion models build on them)."""
