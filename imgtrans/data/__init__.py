"""Data layer: finding images, loading them, pairing, augmenting, colour spaces."""
