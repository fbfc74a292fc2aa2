"""Command line of the Adversarial Autoencoder trainer: flags and dispatch (commands.py trains; use.py draws,
evaluates, encodes and generates).

    python main.py --epochs 100 --download True                 # train on MNIST, weights in weights/
    python main.py train --dataset mnist-sample --epochs 20     # 5,000 real digits shipped here, offline
    python main.py --resume                                     # continue weights/aae.pt
    python main.py draw --weights weights                       # pictures of what the model learned
    python main.py evaluate --weights weights                   # metrics.json + report.md (docs/metrics.md)
    python main.py encode --weights weights --images DIR --out codes.npy   # codes of your images
    python main.py generate --weights weights -n 1000 --out samples        # 1,000 PNGs from prior draws
    torchrun --nproc_per_node 4 main.py --epochs 100            # 4 GPUs (or CPU processes), one process each

With no command it trains. `python main.py --help` lists the commands; `python main.py train --help`
(and each other command's) every flag with its default. Errors a user can cause print one line and
exit with a non-zero code: 2 for bad flags, 1 for data or weights files that cannot be used, 3 for a
diverged run, 130/143 after Ctrl-C/SIGTERM (resumable).
"""

import argparse
import signal
import sys

import commands
import use
from commands import EXIT_FILES, EXIT_USAGE, UsageError
from data import DATASETS, EMNIST_SPLITS
from flags import (MAX_IMAGE_SIZE, at_most, class_label, label_count, non_negative_float, non_negative_int,
                   open_fraction, positive_float, positive_int, probability, seed_int, str2bool)
from images import DataError
from models import ENCODERS
from priors import PRIORS
from utils import CheckpointError, FolderBusy, SaveError
from variants import MODES

COMMANDS = ("train", "draw", "evaluate", "encode", "generate")
PICTURES = ("all", "interpolation", "samples", "reconstructions", "losses", "mode")


def one_line(message):
    """A message as one line, even when it quotes a value or path that holds a line break."""
    return str(message).replace("\r", "\\r").replace("\n", "\\n")


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage block) and exits with 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


class Help(argparse.RawDescriptionHelpFormatter):
    """Each flag's help ends with its default, unless the help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default:" in text or action.default is argparse.SUPPRESS or action.required
                or action.option_strings == ["-h", "--help"]):
            return text
        return f"{text} (default: %(default)s)"


def boolean_flag(group, name, default, help):
    """The one style of every true/false flag: --name [True/False/1/0/yes/no]; bare means True."""
    group.add_argument(name, type=str2bool, nargs="?", const=True, default=default, metavar="BOOL", help=help)


def build_parser():
    """Flags of the train command (also the default command). Names of the original are kept."""
    p = Parser(prog="main.py train", formatter_class=Help,
               description="Train an Adversarial Autoencoder (Makhzani et al. 2016) or another of the paper's models "
                           "on MNIST-format data or a folder of your images. `python main.py` with no command does "
                           "the same.")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default="mnist",
                      help="mnist, fashion-mnist, kmnist, qmnist, emnist, svhn, cifar10: torchvision's files in "
                           "--directory (or --download them); mnist-sample: 5,000 real digits kept in this "
                           "repository; folder: your PNG/JPEG images in --directory. Class subfolders "
                           "(DIR/<class>/*.png, classes in name order, as torchvision's ImageFolder) give labels; a "
                           "flat folder has none and trains only the models that read none (the plain AAE, "
                           "clustering, dim_reduction with --labels 0). DIR/train and DIR/test, if both exist, are "
                           "the splits (docs/data.md)")
    data.add_argument("--directory", default="data", help="where the data lives, or is downloaded to")
    data.add_argument("--test_fraction", type=open_fraction, default=0.1,
                      help="--dataset folder without train/ and test/: the share of its images held out for testing, "
                           "chosen by --seed (the same images every run with the same seed)")
    boolean_flag(data, "--download", False, "download the dataset with torchvision if it is not in --directory")
    data.add_argument("--emnist_split", choices=EMNIST_SPLITS, default="balanced",
                      help="--dataset emnist: which of its splits (torchvision's names): balanced has 47 classes, "
                           "byclass 62, bymerge 47, letters 26, digits and mnist 10")
    data.add_argument("--image_size", type=at_most(MAX_IMAGE_SIZE, "the networks are fully connected"), default=0,
                      metavar="N",
                      help="resize every image to N x N once, when the data is read (aspect not kept) (default: the "
                           "data set's own size; for a folder whose images differ in size, 28)")
    data.add_argument("--channels", type=int, choices=(1, 3), default=0,
                      help="1: make every image grey; 3: colour (RGB) (default: the data set's own; a folder that "
                           "mixes grey and colour images needs it)")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=positive_int, default=100, help="epochs to train in all")
    opt.add_argument("--batch_size", type=positive_int, default=100, help="images per step (the paper's 100)")
    opt.add_argument("--gen_lr", type=positive_float, default=6e-4,
                     help="Adam learning rate of the reconstruction phase: encoder + decoder")
    opt.add_argument("--dis_lr", type=positive_float, default=None,
                     help="Adam learning rate of the regularisation phases: the discriminators, and the encoder as "
                          "generator (default: the model's own: 2e-4 for the plain AAE, where the original's 8e-4 "
                          "lets the discriminator die; 8e-4 for the paper's other models, as they were tuned)")
    opt.add_argument("--lr_decay", choices=("none", "cosine"), default="none",
                     help="learning-rate schedule: none (constant), or cosine: every rate falls along a half cosine "
                          "to near zero in the last epoch")
    opt.add_argument("--seed", type=seed_int, default=0, help="seeds weights, shuffling, dropout and prior draws")

    model = p.add_argument_group("model")
    model.add_argument("--latent_dim", type=at_most(784, "the pixels of an image"), default=8,
                       help="size of the code (of the style, for the models with a category)")
    model.add_argument("--prior", choices=PRIORS, default="gaussian",
                       help="p(z): gaussian N(0, prior_std^2 I); mixture of 10 Gaussians on a circle (Fig. 2) and "
                            "swiss_roll (Fig. 4), both 2-D; uniform on [-1, 1)")
    model.add_argument("--prior_std", type=positive_float, default=5.0,
                       help="standard deviation of --prior gaussian N(0, std^2 I)")
    model.add_argument("--encoder", choices=tuple(ENCODERS), default="deterministic",
                       help="q(z|x): deterministic, gaussian (mean and log-variance, reparameterised) or universal "
                            "(noise as an extra input)")
    model.add_argument("--noise_dim", type=positive_int, default=8, help="--encoder universal: size of its noise")

    paper = p.add_argument_group("the paper's other models")
    paper.add_argument("--mode", choices=MODES, default="unsupervised",
                       help="which model: unsupervised (the AAE, §2), supervised (label to the decoder, §4), "
                            "semi_supervised (§5), clustering (§6), dim_reduction (§7)")
    boolean_flag(paper, "--label_discriminator", False,
                 "the discriminator also sees the label, tying each class to a part of a mixture or swiss_roll "
                 "prior (§2.3)")
    paper.add_argument("--labels", type=label_count, default=-1,
                       help="labelled training examples, for the models that read labels: N (N // classes of "
                            "each class, the first N %% classes classes one more, chosen from --seed) or -1 for all")
    paper.add_argument("--classification_lr", type=positive_float, default=3e-3,
                       help="Adam learning rate of the cross-entropy phase on labelled batches")
    paper.add_argument("--balance_weight", type=non_negative_float, default=0.4,
                       help="semi_supervised, clustering, dim_reduction: weight of the term that keeps a batch spread "
                            "over the categories (ours, not the paper's; the paper's loss: 0 here and in --confidence_weight, "
                            "--augment and --consistency_weight)")
    paper.add_argument("--confidence_weight", type=non_negative_float, default=0.1,
                       help="semi_supervised, clustering, dim_reduction: weight of the term that makes each image sure "
                            "of its category (ours, not the paper's; above --balance_weight the images gather in a "
                            "few categories)")
    paper.add_argument("--augment", type=non_negative_int, default=2, metavar="PIXELS",
                       help="semi_supervised, clustering, dim_reduction: the classification and consistency phases read "
                            "images shifted by up to this many pixels each way (ours, not the paper's); 0 = off")
    paper.add_argument("--consistency_weight", type=non_negative_float, default=1.0,
                       help="semi_supervised, clustering, dim_reduction: weight of a phase that asks a shifted image "
                            "for the category of the image itself (ours, as in IMSAT); 0 = no such phase")
    paper.add_argument("--consistency_threshold", type=probability, default=0.0,
                       help="0: the consistency phase pulls the shifted image towards the image's q(y|x); above 0: "
                            "towards its most likely category, for the images surer of it than this (as FixMatch)")
    paper.add_argument("--clusters", type=positive_int, default=16,
                       help="clustering (and dim_reduction with --labels 0): categories of y (16: the paper's)")

    run = p.add_argument_group("runtime")
    run.add_argument("--weights", default="weights", help="folder for the checkpoint aae.pt, log.csv and pictures")
    run.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                     help="continue the run in --weights (or the given checkpoint file)")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda if present")
    run.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                     help="bf16 autocasts the forward passes; faster on CPUs with AVX-512 BF16/AMX and GPUs")
    add_threads_flag(run)
    run.add_argument("--eval_every", type=non_negative_int, default=0, metavar="N",
                     help="every N epochs (and after the last) add the model's test figures to the log (the plain "
                          "AAE's: docs/metrics.md, with a cheaper 1,000-sample Parzen window); 0 = off")
    run.add_argument("--tensorboard", nargs="?", const=True, default=None, metavar="DIR",
                     help="write the run to TensorBoard as it trains (losses, each epoch's figures, samples, "
                          "reconstructions, codes against the prior, the settings) into DIR (default: "
                          "WEIGHTS/tensorboard); watch with `tensorboard --logdir DIR`. Needs pip install tensorboard")
    run.add_argument("--tensorboard_every", type=positive_int, default=50, metavar="N",
                     help="--tensorboard: write each phase's loss every N steps")
    boolean_flag(run, "--cuda_graphs", True,
                 "on CUDA, replay each training step as one CUDA graph (falls back to eager if capture fails); "
                 "no effect on the CPU or under torchrun")
    return p


def add_threads_flag(parser):
    parser.add_argument("--threads", type=at_most(1024, "far past any CPU's cores"), default=None,
                        help="CPU threads for torch (default: all cores)")


def add_weights_flag(parser):
    """--weights of the commands that use a trained model."""
    parser.add_argument("--weights", default="weights", help="checkpoint file, or the folder holding aae.pt")


def add_device_flags(parser):
    """--device and --threads of the commands that use a trained model (on the CPU unless asked)."""
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="auto: cuda if present")
    add_threads_flag(parser)


def build_draw_parser():
    p = Parser(prog="main.py draw", formatter_class=Help, description="Draw pictures from a trained checkpoint.")
    p.add_argument("what", nargs="*", metavar="PICTURE",
                   help=f"which pictures: {', '.join(PICTURES)} (the model's own: style grid, cluster heads, 2-D "
                        "map); each model offers its own (default: all)")
    add_weights_flag(p)
    p.add_argument("--out", default=None, help="folder for the PNGs (default: beside the checkpoint)")
    p.add_argument("--directory", default=None, help="data folder (default: the one used in training)")
    interpolation = p.add_argument_group("interpolation (the plain AAE's picture)")
    interpolation.add_argument("--classes", type=class_label, nargs=2, metavar=("FROM", "TO"), default=None,
                               help="interpolate from digits of class FROM to class TO (default: random test pairs)")
    interpolation.add_argument("--pairs", type=positive_int, default=8, help="interpolation rows")
    interpolation.add_argument("--steps", type=positive_int, default=10, help="interpolation steps")
    p.add_argument("--seed", type=seed_int, default=0, help="picks the pairs and the prior draws")
    add_device_flags(p)
    return p


def build_evaluate_parser():
    p = Parser(prog="main.py evaluate", formatter_class=Help,
               description="Measure a trained checkpoint on the test split (protocols in docs/metrics.md) and write "
                           "metrics.json, report.md and its pictures.")
    add_weights_flag(p)
    p.add_argument("--out", default=None, help="folder for the report (default: beside the checkpoint)")
    p.add_argument("--dataset", choices=DATASETS, default=None, help="default: the one used in training")
    p.add_argument("--directory", default=None, help="data folder (default: the one used in training)")
    p.add_argument("--samples", type=positive_int, default=10000,
                   help="prior draws decoded for the Parzen window (10,000: the paper's)")
    boolean_flag(p, "--baselines", True, "the paper's models with a category: their obvious baselines beside their "
                 "numbers (k-means on the pixels for clustering, the same network on the labels alone for the "
                 "semi-supervised models; a few seconds to a minute)")
    p.add_argument("--codes_of", default=None, metavar="CHECKPOINT",
                   help="clustering models: k-means also on the codes of this trained plain AAE (trained on the same "
                        "data), another baseline")
    p.add_argument("--seed", type=seed_int, default=0, help="seeds the prior draws and the pictures")
    add_device_flags(p)
    return p


def build_encode_parser():
    p = Parser(prog="main.py encode", formatter_class=Help,
               description="Encode images with a trained checkpoint: one code per image, as model.encode gives it "
                           "(utils.load_models). The categorical models (semi_supervised, clustering, dim_reduction) "
                           "also give each image's most likely class or cluster and its probability q(y|x).")
    add_weights_flag(p)
    p.add_argument("--images", required=True, metavar="PATH",
                   help="a folder of PNG/JPEG images (its own files, not subfolders; rows in file-name order), one "
                        ".png/.jpg image, an IDX file (.gz or plain), or a .npy array: uint8 [N, H, W] or floats in "
                        "[0, 1]. Images are converted to the model's channels and size (grey 28x28 for the MNIST "
                        "models; resized, aspect not kept); arrays must have them already. The MNIST models saw "
                        "white strokes on black")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="where the codes go. npy: float32 [N, code size]; for the categorical models also "
                        "NAME.class.npy (or NAME.cluster.npy), int64 [N], and NAME.probability.npy, float32 [N], "
                        "beside it (NAME: FILE less .npy). csv: a header, then a row per image: file (or index, "
                        "for an array), y0... (the category part of the code, where the model has one), z0... (the "
                        "style, or the whole code), then class (or cluster) and probability (default: codes.npy, "
                        "or codes.csv with --format csv)")
    p.add_argument("--format", choices=("npy", "csv"), default=None,
                   help="what --out holds (default: csv if --out ends in .csv, else npy)")
    add_device_flags(p)
    return p


def build_generate_parser():
    p = Parser(prog="main.py generate", formatter_class=Help,
               description="Generate images with a trained checkpoint: prior draws decoded (model.sample), written "
                           "as PNG files sample_0000.png, sample_0001.png ... or as one grid.")
    add_weights_flag(p)
    p.add_argument("-n", "--number", type=at_most(1_000_000, "a million files"), default=100, metavar="N",
                   help="how many images (the models with a category: category i mod K for image i, as "
                        "model.sample draws them)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for the PNGs; it must not hold samples of an earlier generate (default: "
                        "generated/ beside the checkpoint)")
    boolean_flag(p, "--grid", False, "one picture, grid.png, of all N images (10 a row, or one category a column), "
                 "instead of a file each")
    p.add_argument("--class", dest="category", type=non_negative_int, default=None, metavar="K",
                   help="only images of class (or cluster) K, for the models that decode one: supervised, "
                        "semi_supervised, clustering, dim_reduction, and --label_discriminator trained with labels "
                        "(its class's part of the prior) (default: all classes)")
    p.add_argument("--seed", type=seed_int, default=0, help="seeds the prior draws (as model.sample(N, seed))")
    add_device_flags(p)
    return p


PARSERS = {"train": build_parser, "draw": build_draw_parser, "evaluate": build_evaluate_parser,
           "encode": build_encode_parser, "generate": build_generate_parser}


def build_main_parser():
    """`main.py --help`: the commands."""
    p = Parser(prog="main.py", formatter_class=argparse.RawDescriptionHelpFormatter,
               description="Adversarial Autoencoders (Makhzani et al. 2016, arXiv 1511.05644): train, draw, "
                           "evaluate, encode, generate.",
               epilog="With no command, main.py trains: `python main.py --epochs 100 --download True`.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, text in (("train", "train a model (the default command); `main.py train --help` lists its flags"),
                       ("draw", "pictures of a trained model"),
                       ("evaluate", "the paper's metrics of a trained model: metrics.json and report.md"),
                       ("encode", "codes of your images (a folder, an IDX file or a .npy array): .npy or .csv"),
                       ("generate", "new images from a trained model: a PNG each, or one grid")):
        sub.add_parser(name, help=text, add_help=False)
    return p


def typed_flags(parser, argv):
    """The flags the user actually typed, with their parsed values."""
    quiet = PARSERS[parser]()
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    return vars(quiet.parse_args(argv))


def main(argv=None):
    """Run a command; returns the exit code. Errors a user can cause become one line on stderr."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        build_main_parser().print_help()
        return 0
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "train"
    parser = PARSERS[command]()
    args = parser.parse_args(argv)
    try:
        if command == "train":
            actions = {a.dest: a for a in parser._actions}
            return commands.train(args, typed_flags("train", argv), actions)
        if command == "draw":
            args.what = args.what or ["all"]
            unknown = [w for w in args.what if w not in PICTURES]
            if unknown:
                parser.error(f"unknown picture {unknown[0]!r}; choose from {', '.join(PICTURES)}")
            return use.draw(args, typed_flags("draw", argv))
        if command == "encode":
            return use.encode(args)
        if command == "generate":
            return use.generate(args)
        return use.evaluate(args, typed_flags("evaluate", argv))
    except (UsageError, FolderBusy, ValueError) as e:
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
        distributed = sys.modules.get("torch.distributed")
        if distributed is not None and distributed.is_available() and distributed.is_initialized():
            distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
