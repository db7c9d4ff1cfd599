"""CycleGAN, CUT/FastCUT, BicycleGAN, CVAE and CGAN on the shared loop."""

import dataclasses
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from conftest import (
    evaluation_summary,
    one_line_error,
    random_rgb,
    train_in_folder,
    write_image,
)
from mlflow.tracking import MlflowClient

from imgtrans.cli import build_parser, config_from_args, main
from imgtrans.commands import COMMANDS
from imgtrans.data.codec import Codec
from imgtrans.export.onnx import export_model
from imgtrans.models.bicyclegan import BicycleGAN
from imgtrans.models.cut import CUT
from imgtrans.models.cvae import CVAE
from imgtrans.models.options import BicycleGANConfig, CUTConfig, CVAEConfig
from imgtrans.models.registry import MODELS
from imgtrans.nets.image_pool import ImagePool
from imgtrans.nets.losses import patch_nce_loss
from imgtrans.training import checkpoint
from imgtrans.training.runs import resolve_resume

COMMON = ["--crop-size", "64", "--batch-size", "2", "--log-every", "1", "--val-images", "2", "--sample-images", "2",
          "--no-progress"]
SMALL = {
    "cyclegan": ["--ngf", "4", "--ndf", "4", "--netG", "resnet_6blocks", "--pool-size", "2"],
    "cut": ["--ngf", "4", "--ndf", "4", "--netG", "resnet_6blocks", "--num-patches", "16", "--netF-nc", "8"],
    "fastcut": ["--ngf", "4", "--ndf", "4", "--netG", "resnet_6blocks", "--num-patches", "16", "--netF-nc", "8"],
    "bicyclegan": ["--ngf", "4", "--ndf", "4", "--nef", "4", "--n-samples", "2"],
    "cvae": ["--latent-dim", "8", "--hidden", "16"],
    "cgan": ["--ndf", "4"],
    "diffusion": ["--base-channels", "8", "--channel-mults", "1,2", "--timesteps", "50", "--val-sample-steps", "2"],
}
ZOO = list(SMALL)
PIX2PIX = ["--ngf", "4", "--ndf", "4"]


def train(model, dataset, *extra):
    return main([model, "--dataset", str(dataset), *COMMON, *SMALL[model], *extra])


def runs():
    return mlflow.search_runs(search_all_experiments=True, output_format="list", order_by=["attributes.start_time ASC"])


def test_every_model_is_an_entry_point():
    text = (Path(__file__).resolve().parents[1] / "MLproject").read_text()
    for name in ["pix2pix", *ZOO]:
        assert f"\n  {name}:\n" in text
        for common in ("dataset", "epochs", "max_steps", "batch_size", "crop_size", "seed", "device", "resume"):
            assert f"--{common.replace('_', '-')} {{{common}}}" in text.split(f"\n  {name}:\n")[1].split("command:")[1]


@pytest.mark.parametrize("model", ZOO)
def test_two_step_run(model, facades):
    assert train(model, facades, "--max-steps", "2") == 0
    (run,) = runs()
    assert run.info.status == "FINISHED" and run.data.tags["model"] == model
    assert "val/psnr" in run.data.metrics and any(k.startswith("train/") for k in run.data.metrics)
    if model == "bicyclegan":
        assert "val/diversity_l1" in run.data.metrics


def zoo_config(model: str, dataset, **values):
    """The model's config as `train(model, dataset)` would parse it, with `values` set."""
    args = build_parser().parse_args([model, "--dataset", str(dataset), *COMMON, *SMALL.get(model, PIX2PIX)])
    cfg, _ = config_from_args(COMMANDS[model].config_class, args)
    return dataclasses.replace(cfg, **values)


@pytest.mark.slow
@pytest.mark.parametrize("model", ZOO)
def test_checkpoint_resumes_exactly(model, facades, tmp_path):
    """1 step, then resumed from its checkpoint file to 3 == 3 steps straight (the loop without MLflow)."""
    quick = {"val_images": 0, "sample_images": 0, "recalibrate_bn": 0}  # the weights are what is compared
    train_in_folder(zoo_config(model, facades, max_steps=3, **quick), tmp_path / "straight")
    train_in_folder(zoo_config(model, facades, max_steps=1, **quick), tmp_path / "half")
    resumed_cfg = zoo_config(model, facades, max_steps=3, resume=str(tmp_path / "half" / "checkpoints" / "last.pt"))
    resumed_cfg, payload = resolve_resume(resumed_cfg, {"max_steps": 3})
    train_in_folder(resumed_cfg, tmp_path / "resumed", payload)
    a, b = (checkpoint.read(tmp_path / name / "checkpoints" / "last.pt") for name in ("straight", "resumed"))
    assert a["position"] == b["position"]
    for key, value in a["nets"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b["nets"][key]), key


@pytest.mark.parametrize("model", ["bicyclegan", "cvae", "cgan"])
def test_paired_models_colorize_in_lab(model, aerial):
    assert train(model, aerial, "--max-steps", "1", "--color-space", "lab") == 0
    assert runs()[0].info.status == "FINISHED"


def test_cut_with_unet_generator(facades):
    assert train("cut", facades, "--max-steps", "1", "--netG", "unet", "--nce-layers", "0,2,4") == 0
    assert train("cut", facades, "--max-steps", "1", "--netG", "unet", "--nce-layers", ",") == 2  # no layer
    assert runs()[0].info.status == "FINISHED"


@pytest.mark.slow
def test_cyclegan_identity_disabled(facades):
    assert train("cyclegan", facades, "--max-steps", "1", "--lambda-identity", "0") == 0
    assert train("cyclegan", facades, "--max-steps", "1") == 0
    without, with_identity = runs()
    assert "train/idt_A" not in without.data.metrics and "train/cycle_A" in without.data.metrics
    assert with_identity.data.metrics["train/idt_A"] > 0


def write_unpaired(root: Path, splits: tuple[str, ...], count: int) -> Path:
    """trainA/, trainB/ (and testA/, testB/ …) of random 64 px images."""
    for split in splits:
        for side in "AB":
            for i in range(count):
                write_image(root / f"{split}{side}" / f"{i}.png", random_rgb(64, 64, i))
    return root


def test_cyclegan_on_unpaired_folders(tmp_path):
    write_unpaired(tmp_path, ("train",), 4)
    assert train("cyclegan", tmp_path, "--max-steps", "1") == 0
    run = runs()[0]
    assert "val/psnr" not in run.data.metrics  # no ground truth in truly unpaired data


# --- unit behaviour ------------------------------------------------------------------

def test_patch_nce_prefers_aligned_features():
    torch.manual_seed(0)
    keys = torch.nn.functional.normalize(torch.randn(2 * 16, 8), dim=1)
    aligned = torch.nn.functional.normalize(keys + 0.1 * torch.randn_like(keys), dim=1)
    shuffled = aligned[torch.randperm(aligned.shape[0])]
    assert patch_nce_loss(aligned, keys, 2) < patch_nce_loss(shuffled, keys, 2)


def test_image_pool_state_travels_in_the_state_dict():
    torch.manual_seed(0)
    assert torch.equal(ImagePool(0, (3, 4, 4)).query(torch.ones(2, 3, 4, 4)), torch.ones(2, 3, 4, 4))
    pool = ImagePool(2, (3, 4, 4))
    first = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 3, 4, 4)
    assert torch.equal(pool.query(first), first)  # filling up: the new images come back
    seen = torch.cat([pool.query(torch.full((1, 3, 4, 4), 9.0)) for _ in range(40)])
    values = set(seen[:, 0, 0, 0].tolist())
    assert 9.0 in values and values & {0.0, 1.0}  # sometimes history, sometimes the new image
    restored = ImagePool(2, (3, 4, 4))
    restored.load_state_dict(pool.state_dict())
    assert torch.equal(restored.images, pool.images) and int(restored.stored) == 2


def tiny_bicycle(where_add="input"):
    torch.manual_seed(0)
    cfg = BicycleGANConfig(crop_size=64, ngf=4, ndf=4, nef=4, where_add=where_add)
    return BicycleGAN(cfg, Codec(False)).eval()


@pytest.mark.parametrize("where_add", ["input", "all"])
def test_bicyclegan_z_controls_the_output(where_add):
    model = tiny_bicycle(where_add)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    z1, z2 = torch.randn(2, 8), torch.randn(2, 8)
    with torch.no_grad():
        assert torch.equal(model.generate(x, z1), model.generate(x, z1))
        assert not torch.allclose(model.generate(x, z1), model.generate(x, z2))


def test_exports_of_every_generator_type(tmp_path):
    torch.manual_seed(0)
    cvae = CVAE(CVAEConfig(crop_size=64, latent_dim=8, hidden=16), Codec(True, "lab")).eval()
    cut_unet = CUT(CUTConfig(crop_size=64, ngf=4, ndf=4, netG="unet", num_patches=4, netF_nc=4), Codec(False)).eval()
    for name, model, z_dim in (("cvae", cvae, 8), ("bicycle", tiny_bicycle("all"), 8), ("cut", cut_unet, 0)):
        path, sidecar = export_model(model, tmp_path / name)
        assert sidecar.parity_max_abs_error < 1e-4, name
        assert sidecar.z_dim == z_dim, name
    # The code is a real input of the graph; translate feeds the mean code (zeros) by default.
    from imgtrans.infer.session import OnnxGenerator

    bicycle = tiny_bicycle("input")
    path, _ = export_model(bicycle, tmp_path / "bicycle_input")
    session = OnnxGenerator(path, "cpu")
    x, z = torch.rand(2, 3, 64, 64) * 2 - 1, torch.randn(2, 8)
    with torch.no_grad():
        coded = session.session.run(None, {"input": x.numpy(), "z": z.numpy()})[0]
        assert abs(coded - bicycle.generate(x, z).numpy()).max() < 1e-4
        assert abs(session.run_bound(x).numpy() - bicycle.generate(x, torch.zeros(2, 8)).numpy()).max() < 1e-4


def test_all_models_registered():
    assert set(MODELS) == {"pix2pix", *ZOO}


@pytest.mark.slow
def test_evaluate_bicyclegan_reports_diversity(facades):
    assert train("bicyclegan", facades, "--max-steps", "1") == 0
    run_id = runs()[0].info.run_id
    assert main(["evaluate", "--run-id", run_id, "--grid-images", "1"]) == 0
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert metrics["test/diversity_l1"] >= 0 and "test/psnr" in metrics
    assert "diversity_l1_std" in evaluation_summary(run_id)["metrics"]


def test_evaluate_on_truly_unpaired_data_skips_per_image_scores(tmp_path):
    write_unpaired(tmp_path, ("train", "test"), 3)
    assert train("cyclegan", tmp_path, "--max-steps", "1") == 0
    run_id = runs()[0].info.run_id
    assert main(["evaluate", "--run-id", run_id]) == 0
    assert "test/psnr" not in MlflowClient().get_run(run_id).data.metrics
    assert evaluation_summary(run_id)["metrics"]["n_images"] == 3


def test_unconditional_diffusion_on_a_plain_folder(tmp_path):
    import numpy as np
    from PIL import Image

    for i in range(12):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), np.uint8)).save(tmp_path / f"{i}.png")
    assert train("diffusion", tmp_path, "--max-steps", "2", "--conditional", "false", "--schedule", "signal_cosine",
                 "--prediction", "v", "--sampler", "ddpm") == 0
    run = runs()[0]
    assert run.info.status == "FINISHED" and run.data.params["conditional"] == "False"


def test_exporting_a_diffusion_model_is_refused_in_one_line(facades, capsys):
    assert train("diffusion", facades, "--max-steps", "1", "--val-images", "0", "--sample-images", "0") == 0
    assert main(["export", "--run-id", runs()[0].info.run_id]) == 2
    line = one_line_error(capsys)
    assert "diffusion cannot be exported to ONNX" in line and "sampling steps" in line


def test_diffusion_rejects_a_bad_schedule(facades, capsys):
    assert train("diffusion", facades, "--beta-start", "0.5", "--beta-end", "0.1", "--schedule", "linear") == 2
    assert "monotonically" in capsys.readouterr().err


@pytest.mark.slow
def test_diffusion_validation_reports_kid_when_inception_weights_exist(facades, tmp_path, monkeypatch, capsys):
    from conftest import random_inception_file

    from imgtrans.weights import INCEPTION

    assert train("diffusion", facades, "--max-steps", "1") == 0
    run = runs()[0]
    assert "val/kid" not in run.data.metrics and "val/psnr" in run.data.metrics
    assert "val/kid unavailable" in run.data.tags["mlflow.note.content"]
    assert INCEPTION.filename in capsys.readouterr().err

    weights = random_inception_file(tmp_path / "inception.pth")
    assert train("diffusion", facades, "--max-steps", "1", "--inception-weights", str(weights)) == 0
    run = runs()[-1]
    assert "val/kid" in run.data.metrics and "val/kid_std" in run.data.metrics
    assert f"val/kid: Inception from {weights}" in run.data.tags["mlflow.note.content"]


def test_diffusion_ema_averages_buffers_too_and_warms_up():
    from imgtrans.models.diffusion import Diffusion
    from imgtrans.models.options import DiffusionConfig

    model = Diffusion(DiffusionConfig(crop_size=32, base_channels=8, channel_mults="1,2", timesteps=50,
                                      ema_decay=0.9), Codec(colorization=False))
    model.net.register_buffer("statistic", torch.zeros(1))
    model.ema.module.register_buffer("statistic", torch.zeros(1))
    model.ema.update_parameters(model.net)  # the first update copies
    model.net.statistic.fill_(1.0)
    model.ema.update_parameters(model.net)  # n = 2: decay min(0.9, 3/12)
    assert model.ema.module.statistic.item() == pytest.approx(1 - 3 / 12)
    weight = next(model.net.parameters())
    assert torch.equal(next(model.generator().parameters()), weight)  # unchanged since the copy


def reference_pool_draws(size: int, queries: int, seed: int) -> list[int]:
    """The paper's pool, one image at a time: which query each returned image came from."""
    rng, pool, out = np.random.default_rng(seed), [], []
    for index in range(queries):
        if len(pool) < size:
            pool.append(index)
            out.append(index)
        elif rng.random() < 0.5:
            slot = int(rng.integers(size))
            out.append(pool[slot])
            pool[slot] = index
        else:
            out.append(index)
    return out


@pytest.mark.parametrize("batch", [1, 4])
def test_the_device_image_pool_draws_like_the_papers(batch):
    """Image k is filled with k: what comes back says how old it is. Same share of history and same ages."""
    torch.manual_seed(0)
    pool, queries, drawn = ImagePool(50, (1, 1, 1)), 4000, []
    for start in range(0, queries, batch):
        images = torch.arange(start, start + batch, dtype=torch.float32).view(-1, 1, 1, 1)
        drawn += pool.query(images).flatten().long().tolist()
    reference = reference_pool_draws(50, queries, seed=0)
    for got in (drawn, reference):
        assert got[:50] == list(range(50))  # filling: every image comes back as it is
    ages = [np.array([i - k for i, k in enumerate(d)][50:]) for d in (drawn, reference)]
    shares = [float((a > 0).mean()) for a in ages]
    assert abs(shares[0] - shares[1]) < 0.05 and abs(shares[0] - 0.5) < 0.05
    old = [a[a > 0].mean() for a in ages]
    assert abs(old[0] - old[1]) / old[1] < 0.15  # a stored image is returned after ~2 × size queries
    assert int(pool.stored) == 50 and set(pool.images[:50].flatten().long().tolist()) <= set(range(queries))


def test_an_optimizer_stepped_outside_update_is_refused():
    """Only `update` averages gradients over a torchrun job's processes: stepping elsewhere would let the
    processes' weights drift apart (CUT's F once did), so it raises."""
    model = CUT(CUTConfig(ngf=4, ndf=4, netG="resnet_6blocks", crop_size=64, num_patches=8, netF_nc=8),
                Codec(colorization=False))
    model.configure_optimizers()
    with pytest.raises(RuntimeError, match="optimizer F of CUT was stepped outside `update`"):
        model.optimizers["F"].step()
    batch = {"A": torch.rand(1, 3, 64, 64) * 2 - 1, "B": torch.rand(1, 3, 64, 64) * 2 - 1}
    assert set(model.training_step(batch)) >= {"G_GAN", "NCE"}  # every optimizer of the step goes through it


@pytest.mark.parametrize("heads", [True, False])
def test_flip_equivariance_compares_the_mirrored_translation_with_the_original(monkeypatch, heads):
    """FastCUT's flip equivariance: the generator translates the input mirrored (on heads of the coin), and
    PatchNCE compares the translation's encodings, mirrored back, with the unmirrored input's."""
    from imgtrans.models.cut import FastCUT
    from imgtrans.models.options import FastCUTConfig

    model = FastCUT(FastCUTConfig(ngf=4, ndf=4, netG="resnet_6blocks", crop_size=32, num_patches=4, netF_nc=4),
                    Codec(colorization=False))
    model.configure_optimizers()
    batch = {"A": torch.rand(1, 3, 32, 32) * 2 - 1, "B": torch.rand(1, 3, 32, 32) * 2 - 1}
    seen, compared = [], []
    translate, nce = model.netG.forward, model.nce
    monkeypatch.setattr(model.netG, "forward", lambda x: seen.append(x.clone()) or translate(x))
    monkeypatch.setattr(model, "nce", lambda source, target, flip=None: compared.append((source, flip)) or
                        nce(source, target, flip))
    rand = torch.rand  # the coin is the one draw of no shape
    monkeypatch.setattr(torch, "rand", lambda *shape, **kw: torch.tensor(0.0 if heads else 0.9) if shape == ((),)
                        else rand(*shape, **kw))
    model.training_step(batch)
    real_a = batch["A"]
    assert torch.equal(seen[0], real_a.flip(-1) if heads else real_a)  # the generator's input
    source, flip = compared[0]
    assert torch.equal(source, real_a) and bool(flip) == heads  # PatchNCE's source: never mirrored
