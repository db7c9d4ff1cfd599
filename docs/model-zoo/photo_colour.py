"""Reproduces the real-photograph colorization figures of docs/MODEL_ZOO.md.

    python docs/model-zoo/photo_colour.py prepare <new folder> [<protocol>] [<photo> ...]   # tiles (protocols below)
    imgtrans pix2pix --dataset <folder>/tiles --color-space lab [...]        # one run per variant
    imgtrans evaluate --run-id <run id>                                      # test tiles
    python docs/model-zoo/photo_colour.py score <folder> <sheet.jpg> <label>=<run id>[@<setting>] ...   # full size
    python docs/model-zoo/photo_colour.py check <folder> [<pix2pix option> ...]   # all of it, with a verdict

Four protocols, 128 px tiles:

- within (the default): the photographs the issue names — scikit-learn's china.jpg and flower.jpg and
  matplotlib's grace_hopper.jpg — each cut into 128 px wide vertical strips: strip 2 is tested on, strip 3
  validated on (tiles at a 64 px vertical stride), the others trained on (tiles at a 32 px stride in both
  directions, none reaching into strips 2 or 3). A model learns a photograph's palette from part of it and
  is tested on a part it has not seen.
- within_more: within, with the tiles of across's training photographs added to the training split.
- within_more_twice: within_more, the tested photographs' own training tiles twice over, so that they weigh
  more than the other photographs' (390 of 542 training tiles for the three named photographs, not 195 of 347).
- across: scikit-image's astronaut, coffee, chelsea and rocket are trained on (64 px stride), china
  validated on, flower and grace_hopper tested on: hues the training photographs never show.

Photographs given after the protocol (any image files) take the place of the three named ones: within cuts
each of them (at least 512 px wide) as above; across validates on the first and tests on the others. The
same check then runs on photographs the project has never seen. A photograph whose shorter side is longer than
512 px (the named photographs' and the four others' at most) is first scaled down to it (--short-side; 0 keeps
every size): unscaled, a 128 px tile of a camera's 4000 × 3000 px frame would show a sixth of the width it shows
at 683 × 512, and the check would train on 9,990 tiles of it rather than 91.

`score` exports each run, translates the test photographs whole with `imgtrans translate`, scores them against
the truth beside the grayscale copy and prints the check's ✓/✗ lines for them. A run given as <run id>@<setting>
is exported at that inference setting: a number is a class_temperature (<run id>@0.2), otherwise option=value,
several joined by commas (<run id>@neutral_odds=1.5,class_temperature=0.3).

`check` is the whole check on a prepared folder: the default Lab colorizer (and any pix2pix options given) trained
with seeds 0, 1 and 2, each scored on the test tiles (`imgtrans evaluate`) and at full size, and every score set
against the targets of docs/MODEL_ZOO.md: PSNR and SSIM above the grayscale copy's, a colourfulness ratio of at
least 0.7, a cast no larger than the truth's (n/a where the truth has no colour, or no gray pixels). It prints a
✓/✗ table, draws <folder>/check-sheet.jpg, and exits with 1 when any target is missed, 2 when it cannot run.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import matplotlib.cbook
import numpy as np
import skimage.data
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from imgtrans.data.codec import Codec
from imgtrans.metrics.colour import ColourSums
from imgtrans.metrics.quality import psnr_per_image, ssim_per_image
from imgtrans.models.options import INFERENCE_OPTIONS
from imgtrans.tracking import store

TILE = 128
SEEDS = (0, 1, 2)
TARGET_RATIO = 0.7  # of the truth's colourfulness
# The largest shorter side of the photographs the check was first run on (Grace Hopper's and astronaut's): larger
# photographs given to `prepare` are scaled down to it, so that a tile shows as much of a photograph as it did there
# and the check's training takes about as long.
SHORT_SIDE = 512
SET_BY_CHECK = ("--seed", "--dataset", "--color-space", "--color_space", "--experiment")


def fail(message: str) -> NoReturn:
    """Bad input or a failed step: one line, exit 2 (1 is check's "a target was missed")."""
    print(f"photo_colour.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def named_photographs() -> dict[str, np.ndarray]:
    """The photographs the issue names, in the order across uses them (the first validated on)."""
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        grace_hopper = np.asarray(Image.open(fh).convert("RGB"))
    return {"china": load_sample_image("china.jpg"), "flower": load_sample_image("flower.jpg"),
            "grace_hopper": grace_hopper}


def windows(image: np.ndarray, left: int, right: int, stride: tuple[int, int]):
    """(top, left, tile) of the TILE px windows inside columns [left, right) at (vertical, horizontal) stride."""
    for top in range(0, image.shape[0] - TILE + 1, stride[0]):
        for x in range(left, right - TILE + 1, stride[1]):
            yield top, x, image[top:top + TILE, x:x + TILE]


def read_photographs(paths: list[str], short_side: int) -> dict[str, np.ndarray]:
    """The photographs by name, each scaled down (Lanczos) to a shorter side of `short_side` px where it is longer
    (0: none scaled)."""
    photos = {}
    for path in paths:
        try:
            if Path(path).stem in photos:
                fail(f"two photographs are named {Path(path).stem}; rename one")
            image = Image.open(path).convert("RGB")
        except OSError as exc:
            fail(f"cannot read {path} as an image ({exc}); give image files")
        if short_side and min(image.size) > short_side:
            size = tuple(round(side * short_side / min(image.size)) for side in image.size)
            print(f"{path}: {image.width}×{image.height} px scaled to {size[0]}×{size[1]} (--short-side "
                  f"{short_side}; 0 keeps the size)")
            image = image.resize(size, Image.Resampling.LANCZOS)
        photos[Path(path).stem] = np.asarray(image)
    return photos


def within(photos: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Per photograph: strip 2 to test, strip 3 to validate, the rest to train (see the module's docstring)."""
    split = {"train": {}, "val": {}, "test": {}}
    for name, image in photos.items():
        width = image.shape[1]
        if width < 4 * TILE or image.shape[0] < TILE:
            fail(f"{name} is {width}×{image.shape[0]} px; within needs photographs at "
                 f"least {4 * TILE} px wide and {TILE} px high")
        test, val = (2 * TILE, 3 * TILE), (3 * TILE, 4 * TILE)
        for top, left, tile in windows(image, *test, (TILE // 2, TILE)):
            split["test"][f"{name}-{top:03d}-{left:03d}"] = tile
        for top, left, tile in windows(image, *val, (TILE // 2, TILE)):
            split["val"][f"{name}-{top:03d}-{left:03d}"] = tile
        for region in ((0, test[0]), (val[1], width)):
            for top, left, tile in windows(image, *region, (TILE // 4, TILE // 4)):
                split["train"][f"{name}-{top:03d}-{left:03d}"] = tile
    return split


def other_photographs() -> dict[str, np.ndarray]:
    """scikit-image's photographs of other scenes and hues, as training tiles at a 64 px stride."""
    tiles = {}
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        image = getattr(skimage.data, name)()
        for top, left, tile in windows(image, 0, image.shape[1], (TILE // 2, TILE // 2)):
            tiles[f"{name}-{top:03d}-{left:03d}"] = tile
    return tiles


def within_more(photos: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """within, with the other photographs' tiles added to the training split."""
    split = within(photos)
    split["train"] |= other_photographs()
    return split


def across(photos: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Training photographs of other scenes and hues than the test's: the first of `photos` validated on, the
    others tested on."""
    if len(photos) < 2:
        fail("across needs two photographs or more (the first is validated on)")
    split = {"train": other_photographs(), "val": {}, "test": {}}
    for i, (name, image) in enumerate(photos.items()):
        for top, left, tile in windows(image, 0, image.shape[1], (TILE, TILE)):
            split["val" if i == 0 else "test"][f"{name}-{top:03d}-{left:03d}"] = tile
    return split


def within_more_twice(photos: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """within_more, the tested photographs' training tiles written twice (the copy named <tile>-twice): training
    draws them twice as often as the other photographs' (the loader samples files, not photographs)."""
    split = within(photos)
    split["train"] |= {f"{name}-twice": tile for name, tile in split["train"].items()} | other_photographs()
    return split


PROTOCOLS = {"within": within, "within_more": within_more, "within_more_twice": within_more_twice, "across": across}


def prepare(folder: Path, protocol: str, paths: list[str], short_side: int = SHORT_SIDE) -> None:
    """Writes FOLDER/tiles/{train,val,test} and FOLDER/full (the tested photographs whole), both or neither."""
    taken = [folder / part for part in ("tiles", "full") if (folder / part).exists()]
    if taken:
        fail(f"{taken[0]} exists; prepare into a new folder (tiles of two preparations would mix)")
    photos = read_photographs(paths, short_side) if paths else named_photographs()
    split = PROTOCOLS[protocol](photos)
    tested = {tile.rsplit("-", 2)[0] for tile in split["test"]}  # tiles are named <photograph>-<top>-<left>
    full_size = [name for name in photos if name in tested]
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".prepare-") as tmp:
        for part, tiles in split.items():
            (Path(tmp) / "tiles" / part).mkdir(parents=True)
            for name, tile in tiles.items():
                Image.fromarray(tile).save(Path(tmp) / "tiles" / part / f"{name}.png")
        (Path(tmp) / "full").mkdir()
        for name in full_size:
            Image.fromarray(photos[name]).save(Path(tmp) / "full" / f"{name}.png")
        (Path(tmp) / "tiles").rename(folder / "tiles")
        try:
            (Path(tmp) / "full").rename(folder / "full")
        except OSError:
            (folder / "tiles").rename(Path(tmp) / "tiles")  # both or neither
            raise
    counts = {part: len(tiles) for part, tiles in split.items()}
    print(f"{folder / 'tiles'}: {counts}; full size: {', '.join(full_size)}")


def imgtrans(*args: str) -> str:
    """Runs an imgtrans command; returns what it printed."""
    done = subprocess.run([sys.executable, "-m", "imgtrans", *args, "--no-progress"], check=True, text=True,
                          stdout=subprocess.PIPE)
    return done.stdout


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255


def scores(output: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    colour = ColourSums()
    colour.update(output, truth)
    return {"psnr": float(psnr_per_image(output, truth)), "ssim": float(ssim_per_image(output, truth)),
            **colour.results()}


def export_options(settings: str) -> list[str]:
    """`imgtrans export` options for a run spec's settings: "0.2" (a class_temperature) or "option=value,…"."""
    options = []
    for setting in filter(None, settings.split(",")):
        name, equals, value = setting.rpartition("=")
        name = name if equals else "class_temperature"
        if name not in INFERENCE_OPTIONS or not value:
            fail(f"unknown setting '{setting}': give a class_temperature (a number) or one of "
                 f"{', '.join(f'{o}=<value>' for o in INFERENCE_OPTIONS)}")
        options += [f"--{name.replace('_', '-')}", value]
    return options


def full_size(folder: Path, runs: dict[str, str]) -> tuple[dict[str, np.ndarray], dict, dict]:
    """The full-size photographs, each run's outputs on them (exported at the settings after its @, if any, and
    translated whole) and the scores {photograph: {"grayscale copy" | label: scores}}."""
    photos = {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in sorted((folder / "full").glob("*.png"))}
    codec = Codec(colorization=True, color_space="lab")
    exports = {label: export_options(spec.partition("@")[2]) for label, spec in runs.items()}  # bad ones first
    outputs = {}
    for label, spec in runs.items():
        model = folder / "models" / f"{label}.onnx"
        imgtrans("export", "--run-id", spec.partition("@")[0], "--output", str(model), *exports[label])
        imgtrans("translate", str(folder / "full"), str(folder / f"out-{label}"), "--model", str(model))
        outputs[label] = {name: np.asarray(Image.open(folder / f"out-{label}" / f"{name}.png").convert("RGB"))
                          for name in photos}
    report = {}
    for name, image in photos.items():
        truth = as_tensor(image)
        _, gray = codec.trivial_output(codec.encode_input(truth))
        report[name] = {"grayscale copy": scores(gray, truth),
                        **{label: scores(as_tensor(out[name]), truth) for label, out in outputs.items()}}
    return photos, outputs, report


def draw_sheet(sheet: Path, photos: dict[str, np.ndarray], outputs: dict) -> None:
    """One row per photograph, centre squares: gray input, each run's output, the truth."""
    rows = []
    for name, image in photos.items():
        gray = np.repeat(np.asarray(Image.fromarray(image).convert("L"))[..., None], 3, 2)
        side = min(image.shape[:2])
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        columns = [gray, *(out[name] for out in outputs.values()), image]
        crops = [np.asarray(Image.fromarray(c[top:top + side, left:left + side]).resize((320, 320))) for c in columns]
        rows.append(np.concatenate([np.pad(c, ((4, 4), (4, 4), (0, 0)), constant_values=255) for c in crops], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(sheet, quality=88)
    print(f"{sheet}: columns gray input, {', '.join(outputs)}, truth")


def print_verdicts(lines: list[tuple[str, dict[str, float], dict[str, float]]]) -> bool:
    """Prints the ✓/✗ lines of (where, the scores, the grayscale copy's) under a header; whether every target is
    met."""
    print(f"{'':26}PSNR vs grayscale copy   SSIM vs grayscale copy   ratio ≥ {TARGET_RATIO}   cast (truth)")
    passed = True
    for where, run, gray in lines:
        line, met = verdict(run, gray)
        passed &= met
        print(f"{where:26}{line}")
    return passed


def full_size_lines(label: str, report: dict) -> list[tuple[str, dict[str, float], dict[str, float]]]:
    return [(f"{label} {name}", scores[label], scores["grayscale copy"]) for name, scores in report.items()]


def score(folder: Path, sheet: Path, runs: dict[str, str]) -> None:
    if not (folder / "full").is_dir():
        fail(f"{folder} has no full/ photographs; run `photo_colour.py prepare {folder}` first")
    photos, outputs, report = full_size(folder, runs)
    print(json.dumps(report, indent=1))
    draw_sheet(sheet, photos, outputs)
    print_verdicts([line for label in runs for line in full_size_lines(label, report)])


def train(folder: Path, seed: int, options: list[str]) -> str:
    """The run id of a Lab pix2pix trained on the folder's tiles."""
    printed = imgtrans("pix2pix", "--dataset", str(folder / "tiles"), "--color-space", "lab", "--seed", str(seed),
                       *options)
    finished = re.search(r"finished: run (\w+)", printed)
    if finished is None:
        fail("imgtrans pix2pix did not print the run it trained ('finished: run <id>')")
    return finished.group(1)


def test_tile_scores(run_id: str) -> tuple[dict[str, float], dict[str, float]]:
    """(the run's, the grayscale copy's) scores on the test tiles, as `imgtrans evaluate` recorded them."""
    imgtrans("evaluate", "--run-id", run_id)
    with tempfile.TemporaryDirectory() as tmp:
        summary = store.download(run_id, "evaluation/test/summary.json", Path(tmp))
        metrics = json.loads(summary.read_text())["metrics"]
    prefix = "baseline/grayscale/"
    return ({k: v for k, v in metrics.items() if "/" not in k},
            {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix)})


def verdict(run: dict[str, float], gray: dict[str, float]) -> tuple[str, bool]:
    """One line of the check's table, and whether every target is met. The colour scores are absent (n/a) where
    the truth has no colour (ratio) or no near-neutral pixels (cast): no target to miss there."""
    ratio, cast = run.get("colourfulness_ratio"), run.get("cast")
    met = {"psnr": run["psnr"] > gray["psnr"], "ssim": run["ssim"] > gray["ssim"],
           "ratio": ratio is None or ratio >= TARGET_RATIO, "cast": cast is None or cast <= run["cast_truth"]}
    mark = {k: "✓" if v else "✗" for k, v in met.items()}
    line = (f"{run['psnr']:6.2f} vs {gray['psnr']:6.2f} {mark['psnr']}   "
            f"{run['ssim']:.4f} vs {gray['ssim']:.4f} {mark['ssim']}   "
            + (f"{ratio:4.2f} {mark['ratio']}   " if ratio is not None else " n/a     ")
            + (f"{cast:4.1f} ({run['cast_truth']:.1f}) {mark['cast']}" if cast is not None else " n/a"))
    return line, all(met.values())


def check(folder: Path, options: list[str]) -> None:
    if not (folder / "tiles" / "test").is_dir():
        fail(f"{folder} has no tiles/test; run `photo_colour.py prepare {folder}` first")
    taken = [option for option in options if option.split("=")[0] in SET_BY_CHECK]
    if taken:
        option = taken[0].split("=")[0]
        if option == "--experiment":
            fail("check trains, evaluates and exports in one experiment: set MLFLOW_EXPERIMENT_NAME, not --experiment")
        fail(f"check sets {option} itself; leave it out")
    try:
        runs = {f"seed{seed}": train(folder, seed, options) for seed in SEEDS}
        tiles = {label: test_tile_scores(run_id) for label, run_id in runs.items()}
        photos, outputs, report = full_size(folder, runs)
    except subprocess.CalledProcessError as exc:
        fail(f"`{' '.join(exc.cmd[2:])}` failed (exit {exc.returncode}); its message is above")
    draw_sheet(folder / "check-sheet.jpg", photos, outputs)
    lines = [line for label in runs for line in [(f"{label} test tiles", *tiles[label]),
                                                 *full_size_lines(label, report)]]
    passed = print_verdicts(lines)
    print(", ".join(f"{label}: run {run_id}" for label, run_id in runs.items()))
    print("every target met" if passed else "targets missed: see ✗")
    sys.exit(0 if passed else 1)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} --help)")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = Parser(prog="photo_colour.py", description=__doc__.split("\n\n")[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    prepare_parser = commands.add_parser("prepare", help="cut photographs into tiles under FOLDER/tiles (a new folder)")
    prepare_parser.add_argument("folder", type=Path)
    prepare_parser.add_argument("protocol", nargs="?", default="within", choices=list(PROTOCOLS))
    prepare_parser.add_argument("photos", nargs="*", help="image files instead of the three named photographs")
    prepare_parser.add_argument("--short-side", type=int, default=SHORT_SIDE, metavar="PX",
                                help="scale each photograph given down to a shorter side of PX where it is longer "
                                     f"(0: keep every size; default {SHORT_SIDE}, the largest of the named "
                                     "photographs' and the four others')")
    check_parser = commands.add_parser("check", help="train with seeds 0, 1, 2, score, print the verdict")
    check_parser.add_argument("folder", type=Path)
    check_parser.add_argument("options", nargs=argparse.REMAINDER,
                              help="pix2pix options (everything after FOLDER), e.g. --n-epochs 1")
    score_parser = commands.add_parser("score", help="score runs at full size and draw a sheet")
    score_parser.add_argument("folder", type=Path)
    score_parser.add_argument("sheet", type=Path)
    score_parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_ID[@SETTING]")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse(argv)
    if args.command == "prepare":
        if args.short_side < 0:
            fail(f"--short-side is {args.short_side}; give 0 (keep every size) or a size in px")
        prepare(args.folder, args.protocol, args.photos, args.short_side)
    elif args.command == "check":
        check(args.folder, args.options)
    else:
        if any("=" not in run for run in args.runs):
            fail("give each run as LABEL=RUN_ID (or LABEL=RUN_ID@SETTING: see --help)")
        score(args.folder, args.sheet, dict(run.split("=", 1) for run in args.runs))


if __name__ == "__main__":
    main(sys.argv[1:])
