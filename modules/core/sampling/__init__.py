"""Samplers, schedules and the CFG denoiser (k-diffusion style: small pure functions)."""
