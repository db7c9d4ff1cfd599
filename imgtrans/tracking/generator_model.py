"""A trained imgtrans generator as MLflow loads it ("models from code": MLflow copies this file into the
model, so loading one unpickles nothing): rgb images (N, H, W, 3) in [0, 1] → translated rgb (N, H, W, 3).

    model = mlflow.pyfunc.load_model("models:/aerial-colorizer@champion")
    colour = model.predict(gray_as_rgb)  # float32 in [0, 1]
"""

import mlflow
import numpy as np
import torch

from imgtrans.training.checkpoint import load_model


class GeneratorModel(mlflow.pyfunc.PythonModel):
    # Inputs are arrays of any image size, which MLflow's type-hint schemas cannot express (the logged
    # signature says N × H × W × 3).
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        self.model = load_model(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        images = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        if images.ndim == 3:  # gray (N, H, W)
            images = images[..., None].expand(*images.shape, 3)
        rgb = images.permute(0, 3, 1, 2)
        codec = self.model.codec
        x = codec.encode_input(rgb)
        return codec.decode_output(x, self.model.translate(x).cpu()).permute(0, 2, 3, 1).numpy()


mlflow.models.set_model(GeneratorModel())
