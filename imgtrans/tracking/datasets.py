"""A split of an image dataset as an MLflow dataset: name, source folder, digest of its files, schema and
profile (images, sizes, channels, layout, colour space) — what the UI's Dataset column and filter show."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from mlflow.data.dataset import Dataset
from mlflow.data.schema import TensorDatasetSchema
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.types import Schema, TensorSpec

from imgtrans.data.splits import SplitSummary


class ImageFolderDataset(Dataset):
    def __init__(self, summary: SplitSummary):
        self.summary = summary
        super().__init__(source=LocalArtifactDatasetSource(summary.root), name=summary.name, digest=summary.digest)

    def _compute_digest(self) -> str:
        return self.summary.digest

    @property
    def profile(self) -> dict[str, Any]:
        return self.summary.profile()

    @property
    def schema(self) -> TensorDatasetSchema:
        image = TensorSpec(np.dtype(np.uint8), (-1, -1, -1), "image (height × width × channels)")
        return TensorDatasetSchema(features=Schema([image]))

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "schema": json.dumps(self.schema.to_dict()), "profile": json.dumps(self.profile)}
