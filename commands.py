"""What `main.py train` does once its flags are parsed (main.py parses them; use.py holds the commands that use
a trained model: draw, evaluate, encode, generate).

    import commands, main
    parser = main.build_parser()
    argv = ["--dataset", "mnist-sample", "--epochs", "3"]
    commands.train(parser.parse_args(argv), main.typed_flags("train", argv), {a.dest: a for a in parser._actions})

Every check of the flags alone runs before any folder is created or any data is read (what needs the
data, such as more --labels than the data has, comes after it is read). The errors are one line
(UsageError, ValueError, images.DataError, utils.CheckpointError ...), which main.py turns into an exit code.
"""

import argparse
import math
import os
import signal
import sys
from dataclasses import fields, replace
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

import dashboard
import evaluate as evaluation
import plots
import utils
import variants
from config import UNSAVED_VALUES, ModelConfig, TrainConfig, model_config_from
from data import class_names, load_dataset
from images import FOLDER, scan_folder
from train import Interrupted, NonFiniteLoss, Trainer

EXIT_USAGE, EXIT_FILES, EXIT_DIVERGED = 2, 1, 3
# What a resumed run may change: everything else decides what is being trained.
MAY_CHANGE_ON_RESUME = {"epochs", "precision", "directory"}


DIGITS = 10  # classes of the MNIST sets, whose Dataset.classes is ()


class UsageError(Exception):
    """Flags that cannot work together, or with the files they name; str(e) is one line saying what to do."""


# -- train -----------------------------------------------------------------------------------------


def configs_from(args):
    """The ModelConfig and TrainConfig that parsed flags describe; --dis_lr not given is the model's own."""
    values = dict(vars(args))
    model_names = {f.name for f in fields(ModelConfig)}
    model_cfg = ModelConfig(**{k: v for k, v in values.items() if k in model_names})
    if values.get("dis_lr") is None:  # not typed (nor brought in by --resume)
        values["dis_lr"] = variants.default_dis_lr(model_cfg)
    names = {f.name for f in fields(TrainConfig)}
    return model_cfg, TrainConfig(**{k: v for k, v in values.items() if k in names})


def merge_resume(args, typed, ckpt, actions):
    """Flags not typed take the checkpoint's values; typed ones that contradict it are refused.

    typed: {flag: value} the user gave; actions: {dest: argparse action} of the train parser."""
    saved = {**ckpt["model_config"], **UNSAVED_VALUES, **ckpt.get("train_config", {})}
    clashes = []
    for key, value in saved.items():
        if not hasattr(args, key):
            continue
        if key in typed and typed[key] != value and key not in MAY_CHANGE_ON_RESUME:
            clashes.append(f"--{key} {typed[key]} (checkpoint: {value})")
        elif key not in typed:
            if not passes(actions[key], value):  # what the flag itself would refuse, the file must not bring in
                raise utils.CheckpointError(f"the checkpoint holds {key} = {value!r}, which --{key} refuses; "
                                            "the file is damaged or not from this program")
            setattr(args, key, value)
    if clashes:
        raise UsageError("--resume: these flags contradict the checkpoint: " + ", ".join(clashes)
                         + "; drop them, or train into another --weights folder")
    return args


def passes(action, value):
    """Whether `value`, read from a checkpoint, is one that `action`'s flag accepts."""
    try:
        ok = isinstance(value, str) if action.type is None else action.type(str(value)) == value
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return False
    return ok and (not action.choices or value in action.choices)


def resumes_over_another_run(source, weights):
    """Whether --resume SOURCE would save over a checkpoint in `weights` that is not SOURCE's own file."""
    existing, resumed = weights / utils.CHECKPOINT_NAME, utils.checkpoint_path(source)
    return existing.exists() and not (resumed.exists() and os.path.samefile(existing, resumed))


def check_data_flags(args, typed):
    """The refusals that need only the flags and a look at --dataset folder's file names (no image is opened);
    sets args.n_classes to the data's number of classes, and returns a folder's FolderLayout (None for the
    named sets)."""
    if "emnist_split" in typed and args.dataset != "emnist":
        raise UsageError(f"--emnist_split chooses which EMNIST --dataset emnist reads; {args.dataset} has none: drop it")
    if args.dataset != FOLDER:
        if "test_fraction" in typed:
            raise UsageError(f"--test_fraction holds out part of --dataset folder; {args.dataset} has its own test "
                             "split: drop it")
        args.n_classes = len(class_names(args.dataset, args.emnist_split)) or DIGITS
        return None
    if args.download:
        raise UsageError("--dataset folder reads your own images from --directory; there is nothing to download: "
                         "drop --download")
    layout = scan_folder(args.directory)
    if layout.split_given and "test_fraction" in typed:
        raise UsageError(f"{layout.root} has train/ and test/ subfolders, which give the test split: drop "
                         "--test_fraction")
    if layout.classes:
        args.n_classes = len(layout.classes)
    return layout


def refuse_unlabelled(model_cfg, train_cfg, layout):
    """UsageError if the model trains on labels and the folder is flat, so has none. The models that only are
    measured against labels (clustering) train on it; their label-based figures are skipped."""
    cls = variants.variant_class(model_cfg)
    if layout is None or layout.classes or not cls.reads_labels_with(model_cfg, train_cfg):
        return
    raise UsageError(f"{cls.title} trains on labels, and {layout.root} has none (a flat folder): put the images in "
                     f"class subfolders ({layout.root}/<class>/*.png), or train a model that reads no labels (the "
                     "plain AAE, --mode clustering)")


def check_train(args, typed, weights, source):
    """Every refusal of the train command that needs no data and no folder; returns the two configs."""
    layout = check_data_flags(args, typed)
    model_cfg, train_cfg = configs_from(args)
    variants.check_flags(model_cfg, train_cfg, typed)
    variants.check(model_cfg, train_cfg)
    refuse_unlabelled(model_cfg, train_cfg, layout)
    cls = variants.variant_class(model_cfg)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and cls.cannot_distribute:
        raise UsageError(f"{cls.title} trains in one process ({cls.cannot_distribute}): run it without torchrun")
    if "cuda_graphs" in typed and args.cuda_graphs and cls.cannot_graph:
        raise UsageError(f"{cls.title} cannot be replayed as CUDA graphs ({cls.cannot_graph}): drop --cuda_graphs")
    utils.RunLock(weights).check()
    if not args.resume:
        refuse_an_earlier_run(weights)
    if source is not None and resumes_over_another_run(source, weights):
        raise UsageError(f"{weights / utils.CHECKPOINT_NAME} holds another run than {source}, and resuming saves "
                         f"into --weights; pass --weights {utils.checkpoint_path(source).parent} to continue it "
                         "there, or an empty --weights folder")
    return model_cfg, train_cfg


def image_flags(args, typed, saved=None):
    """(image_size, channels) to read the data with: the flags', or a resumed model's own image shape (`saved`,
    its ModelConfig), which typed flags must not contradict."""
    if saved is None:
        return args.image_size, args.channels
    channels, height, width = saved.image_shape
    if ("image_size" in typed and (args.image_size,) * 2 != (height, width)) or (
            "channels" in typed and args.channels != channels):
        raise UsageError(f"--resume: the checkpoint was trained on images of {channels} x {height} x {width} "
                         "(channels x height x width): drop --image_size and --channels")
    return (height, width), channels


def refuse_an_earlier_run(weights):
    """UsageError if `weights` holds a checkpoint: a forgotten --resume must not lose a run."""
    if (weights / utils.CHECKPOINT_NAME).exists():
        raise UsageError(f"{weights / utils.CHECKPOINT_NAME} holds an earlier run: continue it with "
                         f"`python main.py --weights {weights} --resume`, or train into another --weights folder")


def train(args, typed, actions):
    """The train command; returns the exit code. typed: {flag: value} the user gave."""
    weights = Path(args.weights)
    ckpt = source = None
    if args.resume:
        source = weights if args.resume is True else Path(args.resume)
        ckpt = utils.load_checkpoint(source)
        args = merge_resume(args, typed, ckpt, actions)
    model_cfg, train_cfg = check_train(args, typed, weights, source if isinstance(args.resume, str) else None)
    if args.tensorboard:  # before any work
        try:
            dashboard.tensorboard()
        except ImportError as e:
            raise UsageError(str(e)) from None
    if ckpt is not None:  # the saved sizes, all of them (merge_resume made the flags agree)
        saved_classes = model_cfg.n_classes
        model_cfg = model_config_from(ckpt["model_config"])
        if saved_classes != model_cfg.n_classes and "n_classes" in vars(args):
            raise UsageError(f"{args.directory if args.dataset == FOLDER else args.dataset} now has {saved_classes} "
                             f"classes, and the checkpoint was trained on {model_cfg.n_classes}: pass the --directory it "
                             "was trained on")
    set_threads(args.threads)
    # read before any folder is made: a bad image or data file leaves nothing behind
    image_size, channels = image_flags(args, typed, model_cfg if ckpt is not None else None)
    data = load_dataset(args.dataset, args.directory, args.download, seed=args.seed, test_fraction=args.test_fraction,
                        image_size=image_size, channels=channels, emnist_split=args.emnist_split)
    if ckpt is None:  # the networks take the images as they were read
        model_cfg = replace(model_cfg, image_shape=data.shape)
        variants.check(model_cfg, train_cfg)
    device = utils.choose_device(args.device)
    rank, world_size, device = join_torchrun(device)
    lock = None
    if rank == 0:  # one process speaks, saves and draws; it holds the folder while the run trains
        utils.check_writable(weights)
        lock = utils.RunLock(weights).acquire()
    try:
        if not args.resume and rank == 0:  # a run that finished between the check above and the lock
            refuse_an_earlier_run(weights)
        return _train(args, data, model_cfg, train_cfg, ckpt, source, weights, device, rank, world_size)
    finally:
        if lock is not None:
            lock.release()


def _train(args, data, model_cfg, train_cfg, ckpt, source, weights, device, rank, world_size):
    say = print if rank == 0 else lambda *a, **k: None
    trainer = Trainer(model_cfg, train_cfg, device, data.train.labels, rank=rank, world_size=world_size,
                      cuda_graphs=args.cuda_graphs)
    if ckpt is not None:
        try:
            trainer.load_state_dict(ckpt)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            detail = f"missing {e}" if isinstance(e, KeyError) else " ".join(str(e).split())[:160]
            raise utils.CheckpointError(f"{utils.checkpoint_path(source)} holds weights but not a training state "
                                        f"to resume ({detail}); draw with it, or train afresh elsewhere") from None
        steps = math.ceil(len(data.train.images) / (train_cfg.batch_size * world_size))
        if trainer.partial and trainer.partial["step_in_epoch"] >= steps:  # resumed on other data
            raise UsageError(f"the checkpoint stopped at step {trainer.partial['step_in_epoch']} of an epoch, but "
                             f"the data in {args.directory} makes {steps} steps an epoch: it is not the data of the "
                             f"run; pass the --directory it was trained on")
        say(f"resuming from epoch {trainer.epoch}" + (" (mid-epoch)" if trainer.partial else ""))
    if trainer.epoch >= train_cfg.epochs:  # a partial epoch past --epochs is not wanted either
        say(f"already trained for {trainer.epoch} epochs; raise --epochs to train more")
        return 0
    model = trainer.model
    # its own generator, so the training stream of prior draws is the same with or without it
    fixed_noise = model.sample_prior(100, generator=torch.Generator(device=device).manual_seed(train_cfg.seed))
    progress_dir = weights / "samples"

    def save(t):
        if rank != 0:
            return
        utils.save_checkpoint(t.state_dict(), weights / utils.CHECKPOINT_NAME)
        if t.history:
            utils.write_csv(t.history, weights / utils.LOG_NAME)
        if not t.partial:  # a grid from the same noise every epoch: comparable across epochs
            progress_dir.mkdir(exist_ok=True)
            plots.save_grid(model.decode(fixed_noise), progress_dir / f"epoch_{t.epoch:03d}.png")
        if t.epoch == 1 and not t.partial and len(t.history) == 1 and train_cfg.epochs > 1:
            left = t.history[0]["seconds"] * (train_cfg.epochs - 1)
            say(f"about {_duration(left)} to go at this speed; checkpoint, log.csv and pictures in {weights}/")

    def evaluate_epoch(t):  # --eval_every: the model's test figures in this epoch's row of the log
        if args.eval_every and (t.epoch % args.eval_every == 0 or t.epoch == train_cfg.epochs):
            if model.likelihood_protocol:
                return evaluation.evaluate_trainer(t, data)
            return {k: v for k, v in labelled_numbers(model.numbers(data), data).items() if k != "test_recon_bce"}
        return None

    stop = StopFlag()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    say(f"training {model.title} on {described(data, args.directory)}), {device}"
        + (f" x {world_size} processes" if world_size > 1 else "")
        + f", {train_cfg.precision}; weights in {weights}/")
    should_stop = (lambda: bool(stop)) if world_size == 1 else AgreedStop(stop, device)
    board = None
    if args.tensorboard and rank == 0:
        folder = weights / "tensorboard" if args.tensorboard is True else Path(args.tensorboard)
        board = dashboard.Dashboard(folder, trainer, data.test, every=args.tensorboard_every, seed=train_cfg.seed)
        say(f"TensorBoard: tensorboard --logdir {folder}")
    try:
        trainer.fit(data, save=save, should_stop=should_stop, progress=tqdm_progress() if rank == 0 else None,
                    evaluate=evaluate_epoch, watch=board)
    except Interrupted:
        say(f"saved {weights / utils.CHECKPOINT_NAME} at epoch {trainer.epoch}"
            + (f", step {trainer.partial['step_in_epoch']} of the next" if trainer.partial else "")
            + f"; continue with: python main.py --weights {weights} --resume", file=sys.stderr)
        return 128 + (stop.signum or signal.SIGTERM)  # a rank that was not signalled stops with the others
    except NonFiniteLoss as e:
        kept = (f"the checkpoint in {weights}/ is from epoch {trainer.epoch}, the last good one"
                if (weights / utils.CHECKPOINT_NAME).exists() else "no checkpoint was saved")
        say(f"error: {e}; {kept}. Try lower --gen_lr/--dis_lr.", file=sys.stderr)
        return EXIT_DIVERGED
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if board is not None:
            board.close()
    if rank == 0:
        model.eval()
        what, options = evaluation.fitting_pictures(model, data.test, ("samples", "reconstructions", "losses",
                                                                        "interpolation"))
        model.pictures(data, weights, what, seed=train_cfg.seed, **options)
        if model.own_numbers():
            numbers, _ = write_numbers(model, data, weights, seed=train_cfg.seed)
            if not data.labelled:
                say(UNLABELLED_NOTE)
            say(f"{NUMBERS_NAME}: " + ", ".join(f"{k} {v:.4g}" for k, v in numbers.items() if isinstance(v, float)))
    seconds, n = sum(row["seconds"] for row in trainer.history), len(trainer.history)
    say(f"{n} epoch{'s' * (n != 1)}, {seconds:.1f} s in all ({seconds / n:.1f} s an epoch, "
        f"test evaluation included); {utils.peak_memory(device)}")
    say(f"done: {weights / utils.CHECKPOINT_NAME}, {weights / utils.LOG_NAME} and pictures in {weights}/")
    return 0


NUMBERS_NAME = "mode_metrics.json"  # a model's own numbers, written at the end of training


def write_numbers(model, data, folder, seed=0):
    """NUMBERS_NAME (what was trained, its numbers, the names of its own pictures) and those pictures, into
    `folder`; returns the numbers and the pictures' paths."""
    pictures = model.pictures(data, folder, ("mode",), seed=seed)
    numbers = {**model.settings(data), **labelled_numbers(model.numbers(data), data),
               "pictures": [p.name for p in pictures]}
    utils.write_json(numbers, Path(folder) / NUMBERS_NAME)
    return numbers, pictures


UNLABELLED_NOTE = "k-NN accuracy and the other label-based figures skipped: the images have no labels (a flat folder)"


def labelled_numbers(numbers, data):
    """A model's numbers less those measured against labels, which a flat folder's images do not have."""
    return numbers if data.labelled else {k: v for k, v in numbers.items() if k not in evaluation.LABEL_FIGURES}


def described(data, directory):
    """"NAME (N train / M test" for the line that starts a run; for a folder also where it is and its classes."""
    channels, height, width = data.shape
    sizes = f"{len(data.train.images)} train / {len(data.test.images)} test images, " \
            f"{'grey' if channels == 1 else 'RGB'} {height}x{width}"
    if data.name != FOLDER:
        return f"{data.name} ({sizes}"
    return f"folder {directory} ({f'{len(data.classes)} classes' if data.classes else 'unlabelled'}; {sizes}"


def _duration(seconds):
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" if seconds >= 90 else \
        f"{seconds:.0f} s"


def join_torchrun(device):
    """Under torchrun (WORLD_SIZE > 1) join the process group: (rank, world_size, this process's device)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world_size, device


class StopFlag:
    """Signal handler that only records the request; training saves at the next safe point."""

    def __init__(self):
        self.signum = None

    def __call__(self, signum, frame):
        if self.signum is not None:  # a second request: leave now; saves are atomic
            raise KeyboardInterrupt(signum)  # main() exits with 128 + signum, as the shell would
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping at the next safe point (again to quit at once)",
              file=sys.stderr, flush=True)

    def __bool__(self):
        return self.signum is not None


class AgreedStop:
    """A stop request that all ranks act on at the same step; one that stopped alone would leave the
    others waiting forever in their next all-reduce. Every rank calls it once per step, so every
    `every` calls they can all-reduce their flags together: at most that many steps late."""

    def __init__(self, flag, device, every=20):
        self.flag, self.device, self.every, self.calls = flag, device, every, 0

    def __call__(self):
        self.calls += 1
        if self.calls % self.every:
            return False
        wanted = torch.tensor([float(bool(self.flag))], device=self.device)
        dist.all_reduce(wanted, op=dist.ReduceOp.MAX)
        return bool(wanted.item())


def tqdm_progress():
    """A tqdm bar per epoch on a terminal; nothing when output goes to a file."""
    return partial(tqdm, leave=False, unit="step", dynamic_ncols=True, disable=not sys.stderr.isatty())


def set_threads(threads):
    if threads:
        torch.set_num_threads(threads)
