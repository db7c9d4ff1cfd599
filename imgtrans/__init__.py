"""imgtrans: image-to-image translation experiments on one training loop, tracked in MLflow."""

__version__ = "0.1.0"
