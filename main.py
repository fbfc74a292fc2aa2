"""Command line of the Adversarial Autoencoder trainer.

    python main.py --epochs 100 --download True                 # train on MNIST, weights in weights/
    python main.py --dataset mnist-sample --epochs 20           # 5,000 real digits shipped here, offline
    python main.py --resume                                     # continue weights/aae.pt
    python main.py draw --weights weights                       # pictures of what the model learned
    python main.py evaluate --weights weights                   # metrics.json + report.md (docs/metrics.md)
    torchrun --nproc_per_node 4 main.py --epochs 100            # 4 GPUs (or CPU processes), one process each

`python main.py --help`, `python main.py draw --help` and `python main.py evaluate --help` list
every flag. Errors a user can cause print one line and exit with a non-zero code: 2 for bad flags,
1 for data or weights files that cannot be used, 3 for a diverged run, 130/143 after
Ctrl-C/SIGTERM (resumable).
"""

import argparse
import math
import os
import signal
import sys
from dataclasses import asdict, fields
from pathlib import Path

EXIT_USAGE, EXIT_FILES, EXIT_DIVERGED = 2, 1, 3
COMMANDS = ("train", "draw", "evaluate")
PICTURES = ("all", "interpolation", "samples", "reconstructions", "losses")


# -- flag types: each refuses a bad value with a one-line message --------------------------------


def str2bool(text):
    value = text.strip().lower()
    if value in ("true", "1", "yes", "y", "on"):
        return True
    if value in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True/False/1/0/yes/no, got {text!r}")


def whole_number(text):
    """int(text), or argparse's error for text that is not a whole number."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text):
    value = whole_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text):
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def number(text):
    """float(text), or argparse's error for text that is not a number."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def positive_float(text):
    value = number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def non_negative_float(text):
    value = number(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value + 0.0  # -0 -> 0


def at_most(most, why):
    """positive_int with an upper bound: past it a run would only exhaust memory or threads."""

    def parse(text):
        value = positive_int(text)
        if value > most:
            raise argparse.ArgumentTypeError(f"must be at most {most} ({why}), got {value}")
        return value

    return parse


def class_label(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class, 0 to 9, got {text!r}") from None
    if not 0 <= value <= 9:
        raise argparse.ArgumentTypeError(f"labels run from 0 to 9, got {value}")
    return value


def seed_int(text):
    value = whole_number(text)
    if not -(2**63) <= value <= 2**63 - 3:  # torch takes 64-bit seeds, and the run also uses seed + 1, seed + 2
        raise argparse.ArgumentTypeError(f"must be from -2**63 to 2**63 - 3, got {value}")
    return value


def label_count(text):
    value = whole_number(text)
    if value < -1:
        raise argparse.ArgumentTypeError(f"must be a count >= 0, or -1 for all labels; got {value}")
    return value


def one_line(message):
    """A message as one line, even when it quotes a value or path that holds a line break."""
    return str(message).replace("\r", "\\r").replace("\n", "\\n")


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage block) and exits with 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser():
    """Flags of the training command (the default command). Names of the original are kept."""
    from data import DATASETS
    from models import ENCODERS, MODES
    from priors import PRIORS

    p = Parser(
        prog="main.py",
        description="Train an Adversarial Autoencoder (Makhzani et al. 2016) on MNIST-format data.",
        epilog="Other commands: `main.py draw --help`, `main.py evaluate --help`.",
    )
    p.add_argument("--directory", default="data", help="where the data lives, or is downloaded to (default: data)")
    p.add_argument("--dataset", choices=DATASETS, default="mnist",
                   help="mnist (download or IDX files), fashion-mnist, or mnist-sample: 5,000 real digits "
                        "kept in this repository (default: mnist)")
    p.add_argument("--download", type=str2bool, nargs="?", const=True, default=False,
                   help="download the dataset with torchvision if it is not in --directory: "
                        "True/False/1/0/yes/no, or bare (default: False)")
    p.add_argument("--no-download", dest="download", action="store_false", help="same as --download False")
    p.add_argument("--epochs", type=positive_int, default=100, help="epochs to train in all (default: 100)")
    p.add_argument("--batch_size", type=positive_int, default=100, help="images per step (default: 100, the paper's)")
    p.add_argument("--gen_lr", type=positive_float, default=6e-4,
                   help="Adam learning rate of the reconstruction phase: encoder + decoder (default: 6e-4)")
    p.add_argument("--dis_lr", type=positive_float, default=None,
                   help="Adam learning rate of the regularisation phases: the discriminator, and the encoder "
                        "as generator (default: 2e-4, where the original's 8e-4 lets the discriminator die; 8e-4 with "
                        "--mode or --label_discriminator, as they were tuned)")
    p.add_argument("--lr_decay", choices=("none", "cosine"), default="none",
                   help="learning-rate schedule: none (constant), or cosine: every rate falls along a half "
                        "cosine to near zero in the last epoch (default: none)")
    p.add_argument("--latent_dim", type=at_most(784, "the pixels of an image"), default=8,
                   help="size of the code (default: 8)")
    p.add_argument("--prior_std", type=positive_float, default=5.0,
                   help="standard deviation of the Gaussian prior N(0, std^2 I) (default: 5)")
    p.add_argument("--prior", choices=PRIORS, default="gaussian",
                   help="p(z): gaussian N(0, prior_std^2 I); mixture of 10 Gaussians on a circle (Fig. 2) and "
                        "swiss_roll (Fig. 4), both 2-D; uniform on [-1, 1) (default: gaussian)")
    p.add_argument("--encoder", choices=tuple(ENCODERS), default="deterministic",
                   help="q(z|x): deterministic, gaussian (mean and log-variance, reparameterised) or universal "
                        "(noise as an extra input) (default: deterministic)")
    p.add_argument("--noise_dim", type=positive_int, default=8, help="universal encoder: size of its noise (default: 8)")
    p.add_argument("--mode", choices=MODES, default="unsupervised",
                   help="what is learned: unsupervised (the AAE), supervised (label to the decoder, §4), "
                        "semi_supervised (§5), clustering (§6), dim_reduction (§7) (default: unsupervised)")
    p.add_argument("--label_discriminator", type=str2bool, nargs="?", const=True, default=False,
                   help="the discriminator also sees the label, tying each class to a part of a mixture or "
                        "swiss_roll prior (§2.3) (default: False)")
    p.add_argument("--labels", type=label_count, default=-1,
                   help="labelled training examples for the modes that read labels: N (N/10 a class, chosen "
                        "from --seed) or -1 for all (default: -1)")
    p.add_argument("--classification_lr", type=positive_float, default=3e-3,
                   help="Adam learning rate of the cross-entropy phase on labelled batches (default: 3e-3)")
    p.add_argument("--balance_weight", type=non_negative_float, default=1.0,
                   help="semi_supervised, clustering, dim_reduction: weight of the term that keeps a batch spread "
                        "over the categories (ours, not the paper's; 0 here and in --confidence_weight = the "
                        "paper's loss) (default: 1)")
    p.add_argument("--confidence_weight", type=non_negative_float, default=1.0,
                   help="semi_supervised, clustering, dim_reduction: weight of the term that makes each image sure "
                        "of its category (ours, not the paper's; above --balance_weight the images gather in a few "
                        "categories) (default: 1)")
    p.add_argument("--clusters", type=positive_int, default=16,
                   help="clustering (and dim_reduction with --labels 0): categories of y (default: 16, the paper's)")
    p.add_argument("--seed", type=seed_int, default=0, help="seeds weights, shuffling, dropout and prior draws")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if present")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16 autocasts the forward passes; faster on CPUs with AVX-512 BF16/AMX and GPUs")
    p.add_argument("--weights", default="weights",
                   help="folder for the checkpoint aae.pt, log.csv and pictures (default: weights)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue the run in --weights (or the given checkpoint file)")
    add_threads_flag(p)
    p.add_argument("--eval_every", type=non_negative_int, default=0, metavar="N",
                   help="every N epochs (and after the last) add the test metrics of docs/metrics.md to the log, "
                        "with a cheaper 1,000-sample Parzen window; 0 = off (default: 0)")
    p.add_argument("--cuda_graphs", type=str2bool, nargs="?", const=True, default=True,
                   help="on CUDA, replay each training step as one CUDA graph (falls back to eager if capture "
                        "fails); no effect on the CPU or under torchrun (default: True)")
    return p


def add_threads_flag(parser):
    parser.add_argument("--threads", type=at_most(1024, "far past any CPU's cores"), default=None,
                        help="CPU threads for torch (default: all cores)")


def build_draw_parser():
    p = Parser(prog="main.py draw", description="Draw pictures from a trained checkpoint.")
    p.add_argument("what", nargs="*", metavar="PICTURE",
                   help=f"which pictures: {', '.join(PICTURES)}; of a --mode checkpoint: all, mode (its own: "
                        "style grid, cluster heads, 2-D map), samples, reconstructions, losses (default: all)")
    p.add_argument("--weights", default="weights", help="checkpoint file, or the folder holding aae.pt")
    p.add_argument("--out", default=None, help="folder for the PNGs (default: beside the checkpoint)")
    p.add_argument("--directory", default=None, help="data folder (default: the one used in training)")
    p.add_argument("--classes", type=class_label, nargs=2, metavar=("FROM", "TO"), default=None,
                   help="interpolate from digits of class FROM to class TO (default: random test pairs)")
    p.add_argument("--pairs", type=positive_int, default=8, help="interpolation rows (default: 8)")
    p.add_argument("--steps", type=positive_int, default=10, help="interpolation steps (default: 10)")
    p.add_argument("--seed", type=seed_int, default=0, help="picks the pairs and the prior draws")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    add_threads_flag(p)
    return p


def build_evaluate_parser():
    from data import DATASETS

    p = Parser(prog="main.py evaluate",
               description="Measure a trained checkpoint on the test split (protocols in docs/metrics.md) and write "
                           "metrics.json, report.md and its pictures.")
    p.add_argument("--weights", default="weights", help="checkpoint file, or the folder holding aae.pt")
    p.add_argument("--out", default=None, help="folder for the report (default: beside the checkpoint)")
    p.add_argument("--dataset", choices=DATASETS, default=None, help="default: the one used in training")
    p.add_argument("--directory", default=None, help="data folder (default: the one used in training)")
    p.add_argument("--samples", type=positive_int, default=10000,
                   help="prior draws decoded for the Parzen window (default: 10000, the paper's)")
    p.add_argument("--seed", type=seed_int, default=0, help="seeds the prior draws and the pictures")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    add_threads_flag(p)
    return p


def explicit_flags(parser, argv):
    """The flags the user actually typed, with their parsed values."""
    quiet = build_parser()
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    return vars(quiet.parse_args(argv))


# -- the commands --------------------------------------------------------------------------------


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


def configs_from(args):
    from models import ModelConfig
    from modes import default_dis_lr
    from train import TrainConfig

    values = dict(vars(args))
    if values.get("dis_lr") is None:  # not typed (nor brought in by --resume): the model's own default
        values["dis_lr"] = default_dis_lr(args.mode, args.label_discriminator)
    model_names = {f.name for f in fields(ModelConfig)}
    model_cfg = ModelConfig(**{k: v for k, v in values.items() if k in model_names})
    names = {f.name for f in fields(TrainConfig)}
    train_cfg = TrainConfig(**{k: v for k, v in values.items() if k in names})
    return model_cfg, train_cfg


# What a resumed run may change: everything else decides what is being trained.
MAY_CHANGE_ON_RESUME = {"epochs", "precision", "directory"}


def merge_resume(args, explicit, ckpt):
    """Flags not typed take the checkpoint's values; typed ones that contradict it are refused."""
    from utils import CheckpointError

    from train import UNSAVED_VALUES

    saved = {**ckpt["model_config"], **UNSAVED_VALUES, **ckpt.get("train_config", {})}
    flags = {a.dest: a for a in build_parser()._actions}
    clashes = []
    for key, value in saved.items():
        if not hasattr(args, key):
            continue
        if key in explicit and explicit[key] != value and key not in MAY_CHANGE_ON_RESUME:
            clashes.append(f"--{key} {explicit[key]} (checkpoint: {value})")
        elif key not in explicit:
            if not passes(flags[key], value):  # what the flag itself would refuse, the file must not bring in
                raise CheckpointError(f"the checkpoint holds {key} = {value!r}, which --{key} refuses; "
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


class UsageError(Exception):
    pass


def resumes_over_another_run(source, weights):
    """Whether --resume SOURCE would save over a checkpoint in `weights` that is not SOURCE's own file."""
    import utils

    existing, resumed = weights / utils.CHECKPOINT_NAME, utils.checkpoint_path(source)
    return existing.exists() and not (resumed.exists() and os.path.samefile(existing, resumed))


def train_command(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    import torch

    import mode_outputs
    import modes
    import utils
    from data import load_dataset
    from train import NonFiniteLoss, Interrupted

    weights = Path(args.weights)
    ckpt = None
    if args.resume:
        source = weights if args.resume is True else Path(args.resume)
        ckpt = utils.load_checkpoint(source)
        args = merge_resume(args, explicit_flags(parser, argv), ckpt)
    modes.check_configs(*configs_from(args))  # options that contradict each other: refused before any work
    if under_torchrun() and (args.mode != "unsupervised" or args.label_discriminator):
        what = "--label_discriminator" if args.mode == "unsupervised" else f"--mode {args.mode}"
        raise UsageError(f"{what} trains in one process: run it with python main.py, not torchrun")
    set_threads(args.threads)
    device = utils.choose_device(args.device)
    if not args.resume and (weights / utils.CHECKPOINT_NAME).exists():  # a forgotten --resume must not lose a run
        raise UsageError(f"{weights / utils.CHECKPOINT_NAME} holds an earlier run; continue it with --resume, "
                         "or train into another --weights folder (or delete it)")
    if isinstance(args.resume, str) and resumes_over_another_run(Path(args.resume), weights):
        raise UsageError(f"{weights / utils.CHECKPOINT_NAME} holds another run than {args.resume}, and resuming saves "
                         f"into --weights; pass --weights {utils.checkpoint_path(Path(args.resume)).parent} to continue "
                         "it there, or an empty --weights folder")
    rank, world_size, device = join_torchrun(device)
    say = print if rank == 0 else lambda *a, **k: None  # one process speaks, saves and draws
    if rank == 0:
        utils.check_writable(weights)
    data = load_dataset(args.dataset, args.directory, args.download)
    model_cfg, train_cfg = configs_from(args)
    if ckpt is not None:  # the saved sizes, all of them (merge_resume made latent_dim agree)
        model_cfg = utils.model_config_from(ckpt)
    trainer = modes.make_trainer(model_cfg, train_cfg, device, data.train.labels, rank=rank, world_size=world_size,
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

    # its own generator, so the training stream of prior draws is the same with or without it
    fixed_noise = trainer.sample_prior(100, generator=torch.Generator(device=device).manual_seed(train_cfg.seed))
    progress_dir = weights / "samples"

    def save(t):
        if rank != 0:
            return
        utils.save_checkpoint(t.state_dict(), weights / utils.CHECKPOINT_NAME)
        if t.history:
            utils.write_csv(t.history, weights / utils.LOG_NAME)
        if not t.partial:  # a grid from the same noise every epoch: comparable across epochs
            progress_dir.mkdir(exist_ok=True)
            t.decoder.eval()
            with torch.no_grad():
                utils.save_grid(t.decoder(fixed_noise), progress_dir / f"epoch_{t.epoch:03d}.png")
            t.decoder.train()

    evaluate_epoch = None
    if args.eval_every:
        import evaluate

        def evaluate_epoch(t):
            if t.epoch % args.eval_every == 0 or t.epoch == train_cfg.epochs:
                if model_cfg.mode != "unsupervised":  # its own numbers (mode_metrics.json's)
                    return {k: v for k, v in mode_outputs.mode_metrics(t, data).items() if k != "test_recon_bce"}
                return evaluate.evaluate_trainer(t, data)

    stop = StopFlag()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    say(f"training on {args.dataset} ({len(data.train.images)} train / {len(data.test.images)} test images), "
        f"{device}" + (f" x {world_size} processes" if world_size > 1 else "")
        + f", {train_cfg.precision}; weights in {weights}/")
    should_stop = (lambda: bool(stop)) if world_size == 1 else AgreedStop(stop, device)
    try:
        trainer.fit(data, save=save, should_stop=should_stop, progress=tqdm_progress() if rank == 0 else None,
                    evaluate=evaluate_epoch)
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
    if rank == 0:
        if model_cfg.mode == "unsupervised":
            draw_all(utils.load_models(weights, device=device), data, weights, seed=train_cfg.seed)
        else:  # the usual pictures, as main.py draw makes them for a mode (its own picture comes next)
            mode_outputs.draw(trainer, data, weights, what=("samples", "reconstructions", "losses"), seed=train_cfg.seed)
        if mode_outputs.wanted(model_cfg, train_cfg):
            numbers, _ = mode_outputs.write_outputs(trainer, data, weights)
            say("mode_metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in numbers.items() if isinstance(v, float)))
    seconds, n = sum(row["seconds"] for row in trainer.history), len(trainer.history)
    say(f"{n} epoch{'s' * (n != 1)}, {seconds:.1f} s in all ({seconds / n:.1f} s an epoch, "
        f"test evaluation included); {utils.peak_memory(device)}")
    say(f"done: {weights / utils.CHECKPOINT_NAME}, {weights / utils.LOG_NAME} and pictures in {weights}/")
    return 0


def under_torchrun():
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join_torchrun(device):
    """Under torchrun (WORLD_SIZE > 1) join the process group: (rank, world_size, this process's device)."""
    import os

    import torch

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return torch.distributed.get_rank(), world_size, device


class AgreedStop:
    """A stop request that all ranks act on at the same step; one that stopped alone would leave the
    others waiting forever in their next all-reduce. Every rank calls it once per step, so every
    `every` calls they can all-reduce their flags together: at most that many steps late."""

    def __init__(self, flag, device, every=20):
        self.flag, self.device, self.every, self.calls = flag, device, every, 0

    def __call__(self):
        import torch

        self.calls += 1
        if self.calls % self.every:
            return False
        wanted = torch.tensor([float(bool(self.flag))], device=self.device)
        torch.distributed.all_reduce(wanted, op=torch.distributed.ReduceOp.MAX)
        return bool(wanted.item())


def tqdm_progress():
    """A tqdm bar per epoch on a terminal; nothing when output goes to a file."""
    from functools import partial

    from tqdm import tqdm

    return partial(tqdm, leave=False, unit="step", dynamic_ncols=True, disable=not sys.stderr.isatty())


def draw_all(trained, data, out, what=("all",), classes=None, pairs=8, steps=10, seed=0):
    import utils

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    test = data.test.images.unsqueeze(1).float().div(255) if data is not None else None
    wanted = set(what)
    written = []
    if wanted & {"all", "interpolation"}:
        utils.draw_interpolation(trained, test, data.test.labels, out / "interpolation.png",
                                 n_pairs=pairs, steps=steps, classes=classes, seed=seed)
        written.append("interpolation.png")
    if wanted & {"all", "samples"}:
        utils.draw_samples(trained, out / "samples.png", seed=seed)
        written.append("samples.png")
    if wanted & {"all", "reconstructions"}:
        utils.draw_reconstructions(trained, test, out / "reconstructions.png")
        written.append("reconstructions.png")
    if wanted & {"all", "losses"} and trained.history:
        utils.draw_losses(trained.history, out / "losses.png")
        written.append("losses.png")
    return [out / name for name in written]


def set_threads(threads):
    if threads:
        import torch

        torch.set_num_threads(threads)


def draw_command(argv):
    parser = build_draw_parser()
    args = parser.parse_args(argv)
    args.what = args.what or ["all"]
    set_threads(args.threads)
    import mode_outputs

    known = dict.fromkeys(PICTURES + mode_outputs.PICTURES)
    unknown = [w for w in args.what if w not in known]
    if unknown:
        parser.error(f"unknown picture {unknown[0]!r}; choose from {', '.join(known)}")
    import utils
    from data import load_dataset

    device = utils.choose_device(args.device)
    ckpt = utils.load_checkpoint(args.weights)
    mode = checkpoint_mode(ckpt)
    extra = mode == "unsupervised" and has_mode_outputs(ckpt)  # its number and picture are mode_outputs'
    allowed = (PICTURES + ("mode",) if extra else PICTURES) if mode == "unsupervised" else mode_outputs.PICTURES
    if any(w not in allowed for w in args.what):
        wrong = next(w for w in args.what if w not in allowed)
        raise UsageError(f"a --mode {mode} checkpoint has no {wrong!r} picture; choose from {', '.join(allowed)}")
    if "losses" in args.what and not ckpt.get("history"):
        raise UsageError(f"{utils.checkpoint_path(args.weights)} has no completed epoch yet, so no losses to draw; "
                         "train on with --resume")
    if mode != "unsupervised":
        return draw_mode_command(args, device)
    trained = utils.load_models(args.weights, device=device)
    tc = trained.train_config
    directory = args.directory or tc.get("directory", "data")
    data = None
    if set(args.what) & {"all", "interpolation", "reconstructions", "mode"}:
        data = load_dataset(tc.get("dataset", "mnist"), directory, download=False)
        if args.classes and any(c not in data.test.labels for c in args.classes):
            raise UsageError(f"--classes {args.classes[0]} {args.classes[1]}: labels run from 0 to 9")
    out = Path(args.out) if args.out else utils.checkpoint_path(args.weights).parent
    utils.check_writable(out, "--out")
    for path in draw_all(trained, data, out, args.what, args.classes, args.pairs, args.steps, args.seed):
        print(path)
    if extra and set(args.what) & {"all", "mode"}:
        import modes

        for path in mode_outputs.draw_mode(modes.load_trainer(args.weights, device=device), data, out):
            print(path)
    return 0


def has_mode_outputs(ckpt):
    """Whether a plain-mode checkpoint (its loaded dict) also has mode_outputs' number and picture
    (mode_outputs.wanted): the label discriminator's, and those of the other priors and encoders."""
    import mode_outputs
    import modes
    import utils

    try:
        return mode_outputs.wanted(utils.model_config_from(ckpt), modes.train_config_from(ckpt.get("train_config", {})))
    except (AttributeError, KeyError, TypeError, ValueError):  # a damaged config: utils.load_models says so next
        return False


def checkpoint_mode(ckpt):
    """The --mode a checkpoint (its loaded dict) was trained with. "unsupervised" (the label discriminator's and
    the other priors' and encoders' too) has the plain networks of utils.load_models; the others are modes.py's."""
    return ckpt["model_config"].get("mode", "unsupervised")


def load_mode(weights, device, dataset=None, directory=None):
    """A --mode checkpoint's trainer (networks in eval mode) and the data it was trained on."""
    import modes
    import utils
    from data import load_dataset

    try:
        trainer = modes.load_trainer(weights, device=device)  # networks in eval mode
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:  # shapes were checked; the rest
        detail = f"missing {e}" if isinstance(e, KeyError) else " ".join(str(e).split())[:160]
        raise utils.CheckpointError(f"{utils.checkpoint_path(weights)} holds a --mode model whose state cannot be "
                                    f"loaded ({detail}); the file is damaged or from another version") from None
    tc = trainer.cfg
    data = load_dataset(dataset or tc.dataset, directory or tc.directory, download=False)
    return trainer, data, utils.checkpoint_path(weights)


def draw_mode_command(args, device):
    import mode_outputs
    import utils

    trainer, data, checkpoint = load_mode(args.weights, device, directory=args.directory)
    out = Path(args.out) if args.out else checkpoint.parent
    utils.check_writable(out, "--out")
    for path in mode_outputs.draw(trainer, data, out, args.what, seed=args.seed):
        print(path)
    return 0


def evaluate_command(argv):
    args = build_evaluate_parser().parse_args(argv)
    set_threads(args.threads)
    import time

    import evaluate
    import utils
    from data import load_dataset

    started = time.perf_counter()
    device = utils.choose_device(args.device)
    ckpt = utils.load_checkpoint(args.weights)
    if checkpoint_mode(ckpt) != "unsupervised":
        import mode_outputs

        trainer, data, checkpoint = load_mode(args.weights, device, args.dataset, args.directory)
        out = Path(args.out) if args.out else checkpoint.parent
        utils.check_writable(out, "--out")
        numbers, paths = mode_outputs.write_report(trainer, data, out, checkpoint, seed=args.seed)
        print(", ".join(f"{k} {v:.4g}" for k, v in numbers.items() if isinstance(v, float)))
        for path in paths:
            print(path)
        print(f"evaluated in {time.perf_counter() - started:.1f} s")
        return 0
    trained = utils.load_models(args.weights, device=device)
    tc = trained.train_config
    data = load_dataset(args.dataset or tc.get("dataset", "mnist"), args.directory or tc.get("directory", "data"))
    out = Path(args.out) if args.out else utils.checkpoint_path(args.weights).parent
    utils.check_writable(out, "--out")
    results = evaluate.evaluate_checkpoint(trained, data, evaluate.EvalConfig(parzen_samples=args.samples,
                                                                               seed=args.seed))
    print(evaluate.summary(results))
    for path in evaluate.write_report(trained, data, results, out, args.seed, utils.checkpoint_path(args.weights)):
        print(path)
    if has_mode_outputs(ckpt):  # e.g. the label discriminator's label_part_accuracy and latent_codes.png
        import mode_outputs
        import modes

        numbers, pictures = mode_outputs.write_outputs(modes.load_trainer(args.weights, device=device), data, out)
        print("mode_metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in numbers.items() if isinstance(v, float)))
        for path in [*pictures, out / mode_outputs.METRICS_NAME]:
            print(path)
    print(f"evaluated in {time.perf_counter() - started:.1f} s")
    return 0


def main(argv=None):
    """Run a command; returns the exit code. Errors a user can cause become one line on stderr."""
    from data import DataError
    from utils import CheckpointError, SaveError

    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "train"
    try:
        return {"train": train_command, "draw": draw_command, "evaluate": evaluate_command}[command](argv)
    except (UsageError, ValueError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except (DataError, CheckpointError, SaveError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_FILES
    except OSError as e:  # any other file the system would not let us write or read (a picture, a full disk)
        print(f"error: {e.filename or 'a file'}: {e.strerror or e}", file=sys.stderr)
        return EXIT_FILES
    except KeyboardInterrupt as e:  # Python's own Ctrl-C has no args; StopFlag's carries the signal
        print("interrupted; the last checkpoint saved, if any, is intact (--resume continues it)", file=sys.stderr)
        return 128 + (e.args[0] if e.args and isinstance(e.args[0], int) else signal.SIGINT)
    finally:
        distributed = sys.modules.get("torch.distributed")  # imported only if torch was
        if distributed is not None and distributed.is_available() and distributed.is_initialized():
            distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
