"""The loop's fast path on any device: checkpoints written in the background from a host copy, validation every
`val_every` epochs, and the time the loop spends blocked, logged."""

import threading

import mlflow
import pytest
import torch
from conftest import FAST, figures
from mlflow.tracking import MlflowClient
from torch.utils._python_dispatch import TorchDispatchMode

from imgtrans.cli import main
from imgtrans.training import checkpoint


def test_a_background_checkpoint_holds_the_state_of_the_moment_it_was_taken(tmp_path):
    weights = torch.zeros(512, 512)
    written, release = threading.Event(), threading.Event()

    def on_saved(path):
        written.set()
        release.wait(10)

    saver = checkpoint.BackgroundSaver(on_saved)
    path = tmp_path / "last.pt"
    saver.save({"format": checkpoint.FORMAT, "nets": {"w": weights}}, path)
    weights += 1  # training goes on while the file is written
    assert written.wait(10)
    release.set()
    saver.wait()
    assert torch.equal(checkpoint.read(path)["nets"]["w"], torch.zeros(512, 512))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "mlflow.db"]  # mlflow.db: the test's store


def test_a_failed_background_save_is_raised_in_the_training_thread(tmp_path):
    (tmp_path / "blocker").write_text("a file where the checkpoint folder should be")
    saver = checkpoint.BackgroundSaver(lambda path: None)
    saver.save({"format": checkpoint.FORMAT}, tmp_path / "blocker" / "last.pt")
    with pytest.raises(OSError):
        saver.wait()
    saver.wait()  # reported once


def metric_steps(run_id: str, key: str) -> list[int]:
    return [m.step for m in MlflowClient().get_metric_history(run_id, key)]


def test_validation_every_n_epochs_and_blocked_times_are_logged(facades):
    # 6 training images, batch 2: 3 steps per epoch; 5 epochs; validate after epochs 2 and 4, and at the end.
    assert main(["pix2pix", "--dataset", str(facades), *FAST, "--epochs", "5", "--val-every", "2",
                 "--checkpoint-minutes", "0"]) == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    # (the final scores are logged once more, onto the run's model)
    assert sorted(set(metric_steps(run.info.run_id, "val/psnr"))) == [6, 12, 15]
    assert metric_steps(run.info.run_id, "time/validation_s") == [6, 12, 15]
    checkpoints = [k for k in figures(run.info.run_id) if k.startswith("checkpoint at step")]
    # at the first logging window (step 1), then at every epoch end (checkpoint_minutes=0)
    assert [int(k.split()[3].rstrip(":")) for k in checkpoints] == [1, 3, 6, 9, 12, 15]
    assert run.data.params["val_every"] == "2"
    assert "checkpoint_minutes" not in run.data.params  # bookkeeping: in config.json, not a param
    # The sample sheets, logged on a thread, are all there when the run has finished.
    sheets = [a.path for a in MlflowClient().list_artifacts(run.info.run_id, "samples")]
    assert sheets == ["samples/epoch_002.png", "samples/epoch_004.png", "samples/epoch_005.png"]


def test_by_default_short_epochs_are_validated_every_few(facades):
    # 3 steps per epoch: validation every ceil(100 / 3) = 34 epochs; in 40 epochs at 34 and at the end.
    assert main(["pix2pix", "--dataset", str(facades), *FAST, "--epochs", "40"]) == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert sorted(set(metric_steps(run.info.run_id, "val/psnr"))) == [102, 120]
    assert run.data.params["val_every"] == "34"  # the value used, not the 0 that asked for it


def test_a_sample_sheet_that_cannot_be_logged_is_reported_and_the_run_goes_on(facades, capsys, monkeypatch):
    from imgtrans.tracking.tracker import MlflowTracker

    def full_disk(self, image, key, step):
        raise OSError("No space left on device")

    monkeypatch.setattr(MlflowTracker, "log_image", full_disk)
    assert main(["pix2pix", "--dataset", str(facades), *FAST, "--epochs", "1"]) == 0
    assert "the sample sheet of step 3 could not be logged (No space left on device); training goes on" in \
        capsys.readouterr().err
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.outputs.model_outputs  # the model is there


def test_by_default_a_short_run_checkpoints_once_at_the_end(facades, tmp_path):
    assert main(["pix2pix", "--dataset", str(facades), *FAST, "--epochs", "3"]) == 0
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    found = figures(run.info.run_id)
    # once early (so that a run killed after its first logging window can resume), then at the end
    assert [k for k in found if k.startswith("checkpoint at step")] == [
        "checkpoint at step 1: loop blocked (s)", "checkpoint at step 9: loop blocked (s)"]
    assert checkpoint.read(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="checkpoints/last.pt", dst_path=str(tmp_path)))["position"]["step"] == 9
    assert run.data.params["cuda_graphs"] == "False"
    assert "CUDA graphs: off: not on a CUDA device." in run.data.tags["mlflow.note.content"]
    # The generator's batch-norm statistics were recomputed with its final weights, and kept if that helped.
    assert found["bn_recalibrated"] == (found["bn_eval_train_gap_after"] < found["bn_eval_train_gap_before"])


def test_recalibrated_batch_norm_makes_eval_mode_match_batch_statistics():
    from imgtrans.training import bn_recalibration

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 3, 3, padding=1), torch.nn.BatchNorm2d(3))
    batches = [torch.randn(4, 3, 16, 16) * 3 + 2 for _ in range(6)]  # far from the initial statistics (0, 1)
    net.train()
    net(batches[0])  # one step's worth of running average (momentum 0.1): still far off
    net.eval()
    before, after, kept = bn_recalibration.recalibrate_if_closer(net, net, batches, [torch.cat(batches)])
    assert kept and after < 0.05 * before
    assert not net[1].training and net[1].momentum == 0.1  # the layers are left as they were
    assert bn_recalibration.batch_norms(torch.nn.Sequential(torch.nn.InstanceNorm2d(3))) == []

    # Statistics that already fit the probes are not replaced by ones from other images.
    fitted = {name: b.clone() for name, b in net.named_buffers()}
    other = [torch.randn(4, 3, 16, 16) * 0.5 - 4 for _ in range(3)]
    before, after, kept = bn_recalibration.recalibrate_if_closer(net, net, other, [torch.cat(batches)])
    assert not kept and after > before
    assert all(torch.equal(b, fitted[name]) for name, b in net.named_buffers())


def tiny_model(name: str, **options):
    from imgtrans.compute.runtime import Runtime
    from imgtrans.data.codec import Codec
    from imgtrans.models.registry import model_class

    cls = model_class(name)
    # bicyclegan's two discriminator scales need 48 px or more (its second sees half the crop)
    crop = 64 if name == "bicyclegan" else 32
    defaults = {"crop_size": crop, "ngf": 4, "ndf": 4, "netG": "unet"} if name != "cgan" else {"crop_size": crop}
    model = cls(cls.config_class(**defaults | options), Codec(colorization=False))
    model.setup(Runtime(torch.device("cpu")))
    model.configure_optimizers()
    return model


@pytest.mark.parametrize("name, options, obstacle", [
    ("pix2pix", {}, None),
    ("cgan", {}, None),
    ("cyclegan", {"pool_size": 0}, None),
    ("cyclegan", {}, None),  # its image pool draws on the device
    ("pix2pix", {"gan_mode": "wgangp"}, "gan_mode=wgangp: its gradient penalty is not captured"),
    ("cut", {}, None),
    ("fastcut", {}, None),  # its flip is a coin drawn on the device
    ("bicyclegan", {}, "the bicyclegan step is not capturable"),
])
def test_each_model_declares_whether_its_step_can_be_captured(name, options, obstacle):
    from imgtrans.compute.runtime import Runtime
    from imgtrans.training.graphed_step import training_step_for, why_not_graphed

    model = tiny_model(name, **options)
    assert model.graph_capture_obstacle() == obstacle
    # Without CUDA the step runs eagerly, whatever the model allows.
    step, status = training_step_for(model, Runtime(torch.device("cpu")), model.cfg)
    assert step == model.training_step and status == "off: not on a CUDA device"
    model.cfg.cuda_graphs = False
    assert why_not_graphed(model, Runtime(torch.device("cpu")), model.cfg) == "cuda_graphs=false"


class HostReads(TorchDispatchMode):
    """Records the operators that read tensor values on the host (`.item()`, `bool(t)`, shapes that depend on
    values): a CUDA graph cannot hold them. Optimizer steps are left out: replayed, they run capturable."""

    READING = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "equal"}

    def __init__(self, optimizers):
        super().__init__()
        self.reads: list[str] = []
        self.paused = 0
        for optimizer in optimizers:
            optimizer.step = self.unwatched(optimizer.step)

    def unwatched(self, fn):
        def call(*args, **kwargs):
            self.paused += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.paused -= 1
        return call

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.paused and func.overloadpacket.__name__ in self.READING:
            self.reads.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ["pix2pix", "cgan", "cyclegan", "cut", "fastcut"])
def test_a_capturable_step_reads_no_tensor_on_the_host(name):
    model = tiny_model(name)
    assert model.graph_capture_obstacle() is None
    g = torch.Generator().manual_seed(0)
    batch = {"A": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, "B": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1}
    watch = HostReads(model.optimizers.values())
    for _ in range(2):  # the second step with the optimizers' state in place, as after a capture's warm-up
        with watch:
            model.training_step(batch)
    assert watch.reads == [], f"{name} reads {watch.reads} on the host"


def test_the_warm_up_before_a_capture_leaves_no_trace_and_checkpoints_stay_portable():
    from imgtrans.training.graphed_step import _TrainingState, make_capturable

    model = tiny_model("pix2pix")
    g = torch.Generator().manual_seed(0)
    batch = {"A": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, "B": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1}
    model.training_step(batch)  # optimizer state that existed before the warm-up is put back, not zeroed
    first = next(model.netG.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adam_before = {k: v.clone() for k, v in model.optimizers["G"].state[first].items()}
    rng_before = torch.get_rng_state()
    saved = _TrainingState(model)
    for _ in range(2):
        model.training_step(batch)
        torch.rand(3)  # a random draw in the step (dropout, an image pool)
    assert not torch.equal(first, before[next(iter(model.state_dict()))])
    saved.restore()
    assert torch.equal(torch.get_rng_state(), rng_before)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # batch-norm statistics included
    for key, value in model.optimizers["G"].state[first].items():
        assert torch.equal(value, adam_before[key]), key

    untrained = tiny_model("pix2pix")  # no optimizer state yet: what the warm-up creates becomes zeros
    saved = _TrainingState(untrained)
    untrained.training_step(batch)
    saved.restore()
    assert all(float(v.abs().sum()) == 0 for s in untrained.optimizers["D"].state.values() for v in s.values())

    lrs = make_capturable(model.optimizers.values(), torch.device("cpu"))
    assert all(torch.is_tensor(lr) for _, lr in lrs)
    state = checkpoint.portable_optimizer_state(model.optimizers["G"])
    assert state["param_groups"][0]["lr"] == pytest.approx(model.cfg.lr) and not state["param_groups"][0]["capturable"]
    untrained.optimizers["G"].load_state_dict(state)
    untrained.training_step(batch)  # an eager run continues from a graph run's checkpoint
    assert untrained.optimizers["G"].param_groups[0]["lr"] == pytest.approx(model.cfg.lr)


def test_a_finished_run_keeps_only_what_its_checkpoint_policy_says(facades):
    client = MlflowClient()
    for keep in ("last", "none"):
        assert main(["pix2pix", "--dataset", str(facades), *FAST, "--max-steps", "2", "--keep-checkpoints", keep]) == 0
    kept, dropped = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                       order_by=["attributes.start_time ASC"])
    assert "checkpoints" in {a.path for a in client.list_artifacts(kept.info.run_id)}
    assert "checkpoints" not in {a.path for a in client.list_artifacts(dropped.info.run_id)}
    assert dropped.outputs.model_outputs  # the model stays


class ReplayOnTheHost:
    """What a captured CUDA graph does, on the CPU: it computes only into the tensors it was captured with."""

    def __init__(self, fn, static_inputs, static_output):
        self.fn, self.static_inputs, self.static_output = fn, static_inputs, static_output

    def replay(self):
        self.static_output.copy_(self.fn(*self.static_inputs))


def test_sampling_through_a_replayed_denoiser_gives_the_eager_images():
    from imgtrans.compute import graphs
    from imgtrans.compute.runtime import Runtime

    class HostCapturedCall(graphs.CapturedCall):
        captures = 0

        def _capture(self, inputs):
            HostCapturedCall.captures += 1
            static_inputs = [x.clone() for x in inputs]
            output = self.fn(*static_inputs)
            return ReplayOnTheHost(self.fn, static_inputs, output), static_inputs, output

    from imgtrans.data.codec import Codec
    from imgtrans.models.diffusion import Diffusion
    from imgtrans.models.options import DiffusionConfig

    torch.manual_seed(0)
    model = Diffusion(DiffusionConfig(crop_size=32, base_channels=8, channel_mults="1,2", sampler="dpmpp_2m"),
                      Codec(colorization=False))
    model.setup(Runtime(torch.device("cpu")))
    assert model.sampling_capture_obstacle() == "not on a CUDA device" and not model.denoiser.enabled
    model.eval()
    cond = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    eager = model.sample(cond, 4)
    model.denoiser = HostCapturedCall(model._denoise, enabled=True, key=lambda: model.generator().training)
    assert torch.equal(model.sample(cond, 4), eager)  # inputs copied in, each step's output its own tensor
    assert HostCapturedCall.captures == 1  # one capture, replayed at every later step
    model.sample(cond[:1], 4)
    model.generator().train()
    model.sample(cond[:1], 4)  # another shape, then another mode: captured anew
    assert HostCapturedCall.captures == 3
    for size in (8, 16, 24):
        model.sample(cond[..., :size, :size], 1)
    assert len(model.denoiser.graphs) == graphs.MAX_GRAPHS  # the oldest are let go
    model.cfg.cuda_graphs = False
    assert model.sampling_capture_obstacle() == "cuda_graphs=false"


def test_a_cpu_run_computes_subnormal_floats_as_zero():
    from imgtrans.compute.runtime import resolve_runtime
    from imgtrans.config import RunConfig

    if not torch.set_flush_denormal(False):  # as an earlier run in this process may have left it
        pytest.skip("this CPU cannot flush subnormal floats to zero")
    subnormal = torch.tensor([1e-40])
    assert float(subnormal * 1.0) > 0
    resolve_runtime(RunConfig(device="cpu"))
    assert float(subnormal * 1.0) == 0.0
