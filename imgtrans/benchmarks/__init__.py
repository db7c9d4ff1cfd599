"""The `benchmark` command: inference, training, sampling, DIP, end-to-end and archive throughput."""
