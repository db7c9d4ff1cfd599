"""Where and how a run computes: device, precision, memory format, seeding (`runtime`), and data
parallelism over torchrun's processes (`distributed`)."""
