"""The `translate` command: exported models over archives of scans — tiled, resumable, on one session per
GPU or on a Ray cluster."""
