"""The models: one module per method (its nets and training step) on the protocol of `base`; their options live
in `options` (no torch), the registry by entry-point name in `registry`."""
