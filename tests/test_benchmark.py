import json

import mlflow
import pytest

from imgtrans.benchmarks import inference as benchmark
from imgtrans.cli import main


def test_flop_count_of_a_conv():
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1))
    assert benchmark.flops_per_image(net, 16) == 2 * 3 * 8 * 9 * 16 * 16


@pytest.mark.parametrize("args,message", [
    (["--backends", "tpu"], "backends: invalid value 'tpu'; valid values: eager"),
    (["--batch-sizes", "1,x"], "batch_sizes: invalid list '1,x'; expected whole numbers"),
    (["--dip", "--dip-size", "100"], "dip_size must be a multiple of 32"),
])
def test_bad_lists_and_sizes_are_one_line_before_any_table(capsys, args, message):
    assert main(["benchmark", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not mlflow.search_runs(search_all_experiments=True, output_format="list")  # refused before its run


def test_diffusion_sampling_benchmark(capsys):
    assert main(["benchmark", "--generators", "unet_128", "--tile", "128", "--batch-sizes", "1", "--backends", "eager",
                 "--repeats", "1", "--sampling", "--sampling-sizes", "16,32", "--sampling-steps", "2",
                 "--fast-sampling-steps", "3", "--sampling-channels", "8", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "| 16×16 | fp32 | 1 | ddim | 2 |" in out and "| 32×32 | fp32 | 1 | dpmpp_2m | 3 |" in out
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.data.metrics["bench_sample/32px/fp32/b1/ddim/s_per_image"] > 0
    assert run.data.metrics["bench_sample/32px/fp32/b1/dpmpp_2m/s_per_image"] > 0


def test_device_counts_double_up_to_every_device():
    from imgtrans.benchmarks.translate import device_counts

    assert [device_counts(n) for n in (1, 2, 3, 6, 8)] == [[1], [1, 2], [1, 2, 3], [1, 2, 4, 6], [1, 2, 4, 8]]


def test_the_default_generators_fit_any_tile():
    """`benchmark --tile 64` once picked unet_256, which its own tile cannot feed."""
    from imgtrans.benchmarks.options import BenchmarkConfig

    for name in BenchmarkConfig().generators.split(","):
        for tile in (64, 128, 256):
            benchmark.generator_model(name, tile)


@pytest.mark.slow
def test_the_device_script_runs_every_table_quickly_and_writes_its_report(tmp_path, capsys):
    """`benchmark --all --quick` on a CPU: the GPU session's script, rehearsed (every table, tiny sizes), each
    table printed, written and logged."""
    out = tmp_path / "out"
    assert main(["benchmark", "--all", "--quick", "--device", "cpu", "--output", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "benchmark.json").read_text())
    assert set(summary["tables"]) == {"inference", "training", "sampling", "dip", "e2e", "translate"}
    assert all(summary["tables"].values()) and not summary["skipped"]
    assert {r["backend"] for r in summary["tables"]["inference"]} == {"eager", "ort-cpu"}
    printed = capsys.readouterr().out
    assert (out / "benchmark.md").read_text() in printed and "GPU targets were not measured" in printed
    assert "| unet | ort-cpu | fp32 | 1 |" in printed and "| pix2pix | 1 |" in printed
    assert "| 32×32 | fp32 | 1 | dpmpp_2m | 2 |" in printed and "| 64×64 | fp32 | eager |" in printed
    assert "| end to end | batch | loop img/s |" in printed and "| unet 128×128 | 1 CPU | 2 |" in printed

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    (parent,) = [r for r in runs if r.info.run_name == "benchmark-cpu"]
    metrics = parent.data.metrics
    assert metrics["bench/unet/eager/fp32/b1/images_per_s"] > 0 and metrics["bench/unet/eager/fp32/b1/tflops"] > 0
    for model in ("pix2pix", "cyclegan"):
        # Plain and fast paths train the same model: the same losses on CPU up to float noise.
        assert metrics[f"bench_train/{model}/b1/loss_max_rel_diff"] < 1e-3
        assert metrics[f"bench_e2e/{model}/b1/loop_images_per_s"] > 0 and metrics[f"bench_e2e/{model}/b1/ratio"] > 0
        assert metrics[f"bench_e2e/{model}/b1/checkpoint_mb"] > 0
        # The end-to-end table trains through the real loop: a nested run of each model.
        (child,) = [r for r in runs if r.info.run_name == f"e2e-{model}-b1"]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.info.status == "FINISHED"
        assert child.data.params["max_dataset_size"] == "4" and child.data.params["crop_size"] == "64"
    assert metrics["bench_sample/32px/fp32/b1/ddim/s_per_image"] > 0
    assert metrics["bench_dip/64px/fp32/ms_per_iteration"] > 0
    assert metrics["bench_translate/unet/cpu1/images_per_s"] > 0 and metrics["bench_translate/unet/cpu1/scaling"] == 1


def test_a_budget_leaves_out_the_tables_it_has_no_time_for(tmp_path):
    out = tmp_path / "out"
    assert main(["benchmark", "--all", "--quick", "--device", "cpu", "--budget-s", "0.001", "--output", str(out)]) == 0
    summary = json.loads((out / "benchmark.json").read_text())
    assert list(summary["tables"]) == ["inference"]  # the first table always runs
    assert summary["skipped"] == ["training", "sampling", "dip", "e2e", "translate"]
    assert "Not run within the budget of 0.001 s: training, sampling" in (out / "benchmark.md").read_text()
