"""The commands that use a trained model: `main.py draw` (its pictures), `evaluate` (its numbers: metrics.json
and report.md), `encode` (codes of your images, .npy or .csv) and `generate` (new images: a PNG each, or one
grid). main.py parses their flags; commands.py trains.

    python main.py evaluate --weights weights
    python main.py encode --weights weights --images my_digits/ --out codes.csv
    python main.py generate --weights weights -n 1000 --out samples/
"""
import csv
import io
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import evaluate as evaluation
import plots
import utils
from commands import DIGITS, UNLABELLED_NOTE, UsageError, labelled_numbers, set_threads
from data import load_dataset
from images import read_images

# -- draw and evaluate -----------------------------------------------------------------------------


def load(weights, device):
    """The checkpoint's model (the file read once; in eval mode) and the checkpoint's path."""
    return utils.load_models(weights, device=device), utils.checkpoint_path(weights)


def data_of(model, dataset=None, directory=None):
    """The data set a model was trained on (or the one named), never downloaded; a folder's test split held out
    as in training (the checkpoint's seed and test_fraction)."""
    t = model.train_cfg
    channels, height, width = model.model_cfg.image_shape  # read as the model takes them
    data = load_dataset(dataset or t.dataset, directory or t.directory, download=False, seed=t.seed,
                        test_fraction=t.test_fraction, image_size=(height, width), channels=channels,
                        emnist_split=t.emnist_split)
    count = len(data.classes) or DIGITS
    if data.labelled and count != model.model_cfg.n_classes and model.reads_labels():
        where = f"{dataset} in {directory or t.directory}" if dataset else directory or t.directory
        raise UsageError(f"{where} has {count} classes and the model was trained on {model.model_cfg.n_classes}: "
                         "pass the --dataset and --directory it was trained on")
    return data


def draw(args, typed):
    """The draw command: the pictures args.what of a checkpoint."""
    set_threads(args.threads)
    device = utils.choose_device(args.device)
    model, checkpoint = load(args.weights, device)
    allowed = model.picture_choices()
    wrong = next((w for w in args.what if w != "all" and w not in allowed), None)
    if wrong is not None:
        raise UsageError(f"{model.title} has no {wrong!r} picture; choose from all, {', '.join(allowed)}")
    unread = next((f for f in ("classes", "pairs", "steps") if f in typed and f not in model.draw_flags), None)
    if unread is not None:
        raise UsageError(f"--{unread} is for the interpolation picture, which {model.title} does not draw: drop it")
    if unread is None and not set(args.what) & {"all", "interpolation"}:
        unread = next((f for f in ("classes", "pairs", "steps") if f in typed), None)
        if unread is not None:
            raise UsageError(f"--{unread} is for the interpolation picture: add `interpolation` to the pictures, "
                             "or drop it")
    if "losses" in args.what and not model.history:
        raise UsageError(f"{checkpoint} has no completed epoch yet, so no losses to draw; train on with --resume")
    data = None
    if set(args.what) - {"samples", "losses"}:
        data = data_of(model, directory=args.directory)
        if args.classes and not data.labelled:
            raise UsageError(f"--classes {args.classes[0]} {args.classes[1]}: the images have no labels (a flat "
                             "folder): drop --classes for random test pairs")
        present = set(data.test.labels.tolist())
        missing = [c for c in args.classes or () if c not in present]
        if missing:
            top = len(data.classes) - 1 if data.classes else 9
            raise UsageError(f"--classes {args.classes[0]} {args.classes[1]}: the test split has no image of class "
                             f"{missing[0]} (its classes run from 0 to {top})")
    out = Path(args.out) if args.out else checkpoint.parent
    utils.check_writable(out, "--out")
    options = {"classes": args.classes, "n_pairs": args.pairs, "steps": args.steps} if model.draw_flags else {}
    for path in model.pictures(data, out, args.what, seed=args.seed, **options):
        print(path)
    return 0


def evaluate(args, typed):
    """The evaluate command: metrics.json, report.md and the pictures of a checkpoint."""
    set_threads(args.threads)
    started = time.perf_counter()
    device = utils.choose_device(args.device)
    model, checkpoint = load(args.weights, device)
    if "samples" in typed and not model.likelihood_protocol:
        raise UsageError(f"--samples sizes the Parzen window of the plain AAE's protocol, which {model.title} does "
                         "not run: drop it")
    if "baselines" in typed and args.baselines and not model.has_baselines:
        raise UsageError(f"{model.title} has no baselines to measure: drop --baselines")
    reference = None
    if args.codes_of is not None:
        if not (model.reads_reference() and args.baselines):
            raise UsageError(f"--codes_of gives k-means the codes of a plain AAE, a baseline of the clustering models "
                             f"that {model.title} does not measure{'' if args.baselines else ' (--baselines False)'}: "
                             "drop it")
        reference = utils.load_models(args.codes_of, device=device)
        trained_on = (reference.train_cfg.dataset, model.train_cfg.dataset)
        if trained_on[0] != trained_on[1]:
            raise UsageError(f"--codes_of {args.codes_of} was trained on {trained_on[0]}, {checkpoint} on "
                             f"{trained_on[1]}: give a plain AAE of the same data")
    data = data_of(model, args.dataset, args.directory)
    out = Path(args.out) if args.out else checkpoint.parent
    utils.check_writable(out, "--out")
    results = numbers = None
    if model.likelihood_protocol:
        results = evaluation.evaluate_checkpoint(model, data, evaluation.EvalConfig(parzen_samples=args.samples,
                                                                                    seed=args.seed))
        print(evaluation.summary(results))
    if not data.labelled:
        print(UNLABELLED_NOTE)
    if model.own_numbers():
        numbers = labelled_numbers(model.numbers(data), data)
        print(", ".join(f"{k} {v:.4g}" for k, v in numbers.items() if isinstance(v, float)))
        if args.baselines and model.has_baselines and data.labelled:
            measured = model.baselines(data, reference)
            print("baselines: " + ", ".join(f"{k} {v:.4g}" for k, v in measured.items()))
            numbers.update(measured)
    for path in evaluation.write_report(model, data, out, results, numbers, args.seed, checkpoint):
        print(path)
    print(f"evaluated in {time.perf_counter() - started:.1f} s")
    return 0


# -- encode and generate ---------------------------------------------------------------------------

CHUNK = 10_000  # images converted to floats at a time (a multiple of the models' own batches of 1,000)
GRID_MOST = 10_000  # generate --grid: past this the one picture is tens of thousands of pixels wide


def encode(args):
    """The encode command: the codes of args.images (and a categorical model's class or cluster) into args.out."""
    set_threads(args.threads)
    out, fmt = encode_target(args.out, args.format)
    device = utils.choose_device(args.device)
    model, _ = load(args.weights, device)
    names, images = read_images(args.images, model.model_cfg.image_shape)
    utils.check_writable(out.parent, "--out")

    def floats(start):  # images[start : start + CHUNK] in [0, 1], as data.to_float makes them
        chunk = images[start : start + CHUNK]
        return chunk.to(torch.float32).div_(255) if chunk.dtype == torch.uint8 else chunk

    starts = range(0, len(images), CHUNK)
    codes = torch.cat([model.encode(floats(i)).cpu() for i in starts])
    kind = category = probability = None
    if model.predicts_category:  # the categorical models: q(y|x)'s most likely category
        kind = model.classes()[1]
        category = torch.cat([model.predict_category(floats(i)).cpu() for i in starts])
        probs = torch.cat([model.category_probabilities(floats(i)).cpu() for i in starts])
        probability = probs.gather(1, category[:, None]).squeeze(1)
    latent = model.model_cfg.latent_dim  # the code is [y, z]: a category part y (where it has one), then z
    columns = [f"y{i}" for i in range(codes.shape[1] - latent)] + [f"z{i}" for i in range(latent)]
    if fmt == "csv":
        files = [(out, lambda tmp: tmp.write_text(codes_csv(names, columns, codes, kind, category, probability),
                                                  newline=""))]
    else:
        base = out.name[: -len(".npy")] if out.name.lower().endswith(".npy") else out.name
        arrays = [(out, codes.numpy())]
        if kind is not None:
            arrays += [(out.with_name(f"{base}.{kind}.npy"), category.numpy()),
                       (out.with_name(f"{base}.probability.npy"), probability.numpy())]
        files = [(path, lambda tmp, a=array: save_array(tmp, a)) for path, array in arrays]
    written = utils.write_together(files)
    source = f"{len(images)} image{'s' * (len(images) != 1)}"
    source += " (in file-name order)" if len(names or []) > 1 else ""
    print(f"encoded {source} with {model.title}: codes {list(codes.shape)}"
          + (f", and each image's {kind} and its probability" if kind else ""))
    for path in written:
        print(path)
    return 0


def save_array(path, array):
    """np.save into exactly `path` (given a name, np.save would add .npy to it)."""
    with open(path, "wb") as f:
        np.save(f, array)


def encode_target(out, fmt):
    """The file encode writes and its format, from --out and --format; UsageError where they disagree."""
    out = Path(out if out is not None else f"codes.{fmt or 'npy'}")
    suffix = out.suffix.lower()
    fmt = fmt or ("csv" if suffix == ".csv" else "npy")
    if suffix in (".npy", ".csv") and suffix != f".{fmt}":
        raise UsageError(f"--out {out} ends in {out.suffix} but --format {fmt} writes "
                         f"{'a CSV' if fmt == 'csv' else 'a .npy array'}: name it {out.with_suffix('.' + fmt)}, "
                         "or drop --format")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder: give a file in it, such as {out / ('codes.' + fmt)}")
    return out, fmt


def codes_csv(names, columns, codes, kind, category, probability):
    """The CSV text: a header, then a row per image (its file name, or its index in the array)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["file" if names else "index", *columns, *([kind, "probability"] if kind else [])])
    if kind:
        category, probability = category.tolist(), probability.tolist()
    for i, code in enumerate(codes.tolist()):
        extra = [category[i], f"{probability[i]:.9g}"] if kind else []
        writer.writerow([names[i] if names else i, *(f"{v:.9g}" for v in code), *extra])  # 9 digits: float32 exact
    return text.getvalue()


def generate(args):
    """The generate command: prior draws decoded, a PNG file each or one grid, into args.out."""
    set_threads(args.threads)
    device = utils.choose_device(args.device)
    n, g = args.number, torch.Generator().manual_seed(args.seed)
    if args.grid and n > GRID_MOST:
        raise UsageError(f"-n {n} is too many for one --grid picture: use -n {GRID_MOST} or fewer, or drop --grid")
    model, checkpoint = load(args.weights, device)
    out = Path(args.out) if args.out else checkpoint.parent / "generated"
    which = ""
    nrow = model.grid_columns  # one category a column, where sample_prior's row i is category i mod K
    if args.category is not None:
        count, kind = model.classes()
        if not count:
            raise UsageError(f"{model.title} decodes no class: drop --class (the supervised, semi_supervised, "
                             "clustering and dim_reduction models, and a label discriminator trained with labels, "
                             "have classes)")
        if args.category >= count:
            raise UsageError(f"--class {args.category}: {model.title} has {kind}{'es' if kind == 'class' else 's'} "
                             f"0 to {count - 1}")
        which, nrow = f", {kind} {args.category}", 10
    codes = model.sample_prior(n, generator=g, category=args.category)  # with no --class, what model.sample decodes
    if args.grid and (out / "grid.png").exists():
        raise UsageError(f"{out} holds grid.png of an earlier generate: pass another --out, or delete it")
    if not args.grid and out.is_dir():
        earlier = sum(1 for _ in out.glob("sample_*.png"))
        if earlier:
            raise UsageError(f"{out} holds {earlier} sample{'s' * (earlier != 1)} (sample_*.png) of an earlier "
                             "generate: pass another --out, or delete them")
    utils.check_writable(out, "--out")
    if args.grid:
        images = model.decode(codes).cpu()
        written = utils.write_together([(out / "grid.png", lambda tmp: plots.save_grid(images, tmp, nrow=nrow))])
        print(f"{n} images of {model.title}{which} (seed {args.seed}), in one grid:")
        print(written[0])
        return 0
    digits = max(4, len(str(n - 1)))
    written = utils.write_together(png_files(model, codes, out, digits), fsync=False)  # --seed makes them again
    print(f"{n} images of {model.title}{which} (seed {args.seed}): {written[0].name} to {written[-1].name} in {out}/")
    return 0


def png_files(model, codes, folder, digits):
    """(path, save) for each image decoded from `codes`, decoded 1,000 at a time (as model.decode batches)."""
    for start in range(0, len(codes), 1000):
        images = model.decode(codes[start : start + 1000]).cpu()
        # to 0..255 as torchvision's save_image rounds; [C, H, W] -> [H, W] (grey) or [H, W, C]
        pixels = images.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i, image in enumerate(pixels, start):
            picture = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
            yield folder / f"sample_{i:0{digits}d}.png", lambda tmp, p=picture: p.save(tmp)
