"""GAN objectives and the WGAN-GP gradient penalty.

`GANLoss(mode)(prediction, target_is_real)` gives the generator or
discriminator term; for hinge the discriminator and generator forms differ,
so callers say which one they want with `for_discriminator`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from imgtrans.errors import ImgtransError

GAN_MODES = ("vanilla", "lsgan", "wgangp", "hinge")


class GANLoss(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        if mode not in GAN_MODES:
            raise ImgtransError(f"invalid gan_mode '{mode}'; valid values: {', '.join(GAN_MODES)}")
        self.mode = mode

    def forward(self, prediction, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        """`prediction` is a patch map, or a list of them from a multi-scale discriminator (averaged)."""
        if isinstance(prediction, (list, tuple)):
            return sum(self(p, target_is_real, for_discriminator) for p in prediction) / len(prediction)
        prediction = prediction.float()
        if self.mode == "vanilla":
            target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
            return F.binary_cross_entropy_with_logits(prediction, target)
        if self.mode == "lsgan":
            target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
            return F.mse_loss(prediction, target)
        if self.mode == "wgangp":
            return -prediction.mean() if target_is_real else prediction.mean()
        # hinge
        if not for_discriminator:
            return -prediction.mean()
        return F.relu(1 - prediction).mean() if target_is_real else F.relu(1 + prediction).mean()


def gradient_penalty(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     weight: float = 10.0, target_norm: float = 1.0) -> torch.Tensor:
    """WGAN-GP: weight · E[(‖∇D(x̂)‖₂ − 1)²] on random interpolates x̂ of real and fake."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = discriminator(mixed)
    total = sum(o.float().sum() for o in out) if isinstance(out, (list, tuple)) else out.float().sum()
    (grad,) = torch.autograd.grad(total, mixed, create_graph=True)
    norms = grad.flatten(1).float().norm(2, dim=1)
    return weight * ((norms - target_norm) ** 2).mean()


def patch_nce_loss(query: torch.Tensor, key: torch.Tensor, batch_size: int, temperature: float = 0.07) -> torch.Tensor:
    """PatchNCE (Park et al. 2020): each query patch must pick its own key patch among the other patches of
    the same image. query, key: (N·P, C) normalised embeddings of the same P locations per image."""
    key = key.detach()
    positives = (query * key).sum(1, keepdim=True)  # (N·P, 1)
    q = query.view(batch_size, -1, query.shape[1])
    k = key.view(batch_size, -1, key.shape[1])
    negatives = torch.bmm(q, k.transpose(1, 2))  # (N, P, P)
    patches = negatives.shape[1]
    eye = torch.eye(patches, device=query.device, dtype=torch.bool)[None]
    negatives = negatives.masked_fill(eye, -10.0).flatten(0, 1)  # a patch is not its own negative
    logits = torch.cat([positives, negatives], 1) / temperature
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, target)


VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PerceptualLoss(nn.Module):
    """Mean squared distance between VGG16 activations (relu1_2, relu2_2, relu3_3) of two images in [-1, 1].

    The backbone is torchvision's VGG16 loaded from `weights` (its state-dict file); None leaves it random,
    which keeps the math testable without the file. Gray images are repeated to three channels.
    """

    LAYERS = (3, 8, 15)

    def __init__(self, weights=None):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        # Only the convolutional layers in use: building the whole VGG16 would initialise its 120 M-parameter
        # classifier for nothing.
        features = make_layers(cfgs["D"])[:max(self.LAYERS) + 1]
        if weights is not None:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            wanted = features.state_dict().keys()
            features.load_state_dict({k: state[f"features.{k}"] for k in wanted})
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() + 1) / 2
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y = self._normalise(prediction), self._normalise(target)
        loss = prediction.new_zeros((), dtype=torch.float32)
        for index, layer in enumerate(self.features):
            x, y = layer(x), layer(y)
            if index in self.LAYERS:
                loss = loss + F.mse_loss(x, y)
        return loss / len(self.LAYERS)
