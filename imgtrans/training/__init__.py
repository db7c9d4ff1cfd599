"""The training loop every model runs on, the run protocol every kind of run shares, and what a run needs to
stop and continue exactly: checkpoints, the captured step, learning-rate schedules, batch-norm recalibration."""
