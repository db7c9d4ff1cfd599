"""Networks: pure nn.Modules, no training logic."""
