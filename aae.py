"""The Adversarial Autoencoder (Makhzani et al. 2016, §2) as a variant, and what every variant shares.

A *variant* is one model of the paper: its networks and optimisers, its step (which phases run, on
what), its log columns, its prior, its numbers, its pictures and the flags it reads. The training
loop (train.Trainer) and the commands call only what `Variant` declares; they never ask which model
they hold. variants.py maps names to classes; conditional.py holds the models that read a label
beside the code (§2.3, §4), categorical.py those with a categorical code (§§5-7).

    from aae import AAE
    from config import ModelConfig, TrainConfig
    model = AAE(ModelConfig(), TrainConfig(), "cpu")
    draws = model.draw(rows)                  # every random input of a step but dropout
    model.step(x, rows, draws, sums)          # one batch; adds each column's loss to `sums`
    images = model.sample(64)                 # prior draws, decoded
"""

from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

import metrics
import plots
import priors
from config import ModelConfig, TrainConfig
from data import to_float
from models import ENCODERS, Decoder, Discriminator, one_hot
from phases import discriminator_phase, generator_phase, reconstruction_phase


# The discriminators' Adam rate (--dis_lr) when none is given, for every model but the plain AAE: the rate
# the paper's other models were tuned and measured at. In earlier runs the plain AAE's 2e-4 let the tests'
# tiny clustering runs collapse to one category, and clustered the MNIST sample worse.
PAPER_MODELS_DIS_LR = 8e-4
# Offsets from the seed (the loop uses seed, +1, +2): which examples are labelled; labelled batches.
SELECT_SEED, LABEL_BATCH_SEED = 3, 4


def adam(params, lr, beta1, device, capturable=False):
    # fused Adam: one kernel for all parameters, where this torch supports it on the device;
    # capturable keeps its step counts on the GPU so that a CUDA graph can replay it
    return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999), fused=device.type in ("cpu", "cuda"),
                            capturable=capturable)


def select_labels(labels, n, n_classes, seed):
    """The only training labels a model gets: [N] long, the label on the labelled subset, -1 elsewhere.

    n = -1: all; n = 0: none; else n // n_classes examples of each class (the first n % n_classes
    classes one more), drawn with a generator seeded from `seed`, so a resumed run picks the same ones.
    Choosing a balanced subset reads every label once, here; nothing after this sees them.
    """
    labels = torch.as_tensor(labels).long().cpu()
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"training labels must lie in [0, {n_classes}), got [{labels.min()}, {labels.max()}]")
    if n == -1:
        return labels.clone()
    if n > len(labels):
        raise ValueError(f"--labels {n}: the training split has only {len(labels)} examples")
    if 0 < n < n_classes:
        raise ValueError(f"--labels {n} leaves classes without a labelled example: give at least {n_classes}, one a "
                         "class")
    chosen = torch.full_like(labels, -1)
    g = torch.Generator().manual_seed(seed + SELECT_SEED)
    for c in range(n_classes):
        want = n // n_classes + (c < n % n_classes)
        members = (labels == c).nonzero().flatten()
        if len(members) < want:
            raise ValueError(f"--labels {n}: class {c} has only {len(members)} training examples, {want} wanted")
        chosen[members[torch.randperm(len(members), generator=g)[:want]]] = c
    return chosen


@contextmanager
def evaluating(*modules):
    """Eval mode (no dropout, mean codes) and no gradients, restoring each module's mode afterwards."""
    was = [m.training for m in modules]
    try:
        with torch.no_grad():
            yield [m.eval() for m in modules]
    finally:
        for m, training in zip(modules, was):
            m.train(training)


def batched(fn, images, batch_size=1000):
    """fn of images as floats in [0, 1], a batch at a time, concatenated.

    images: uint8 [N, H, W] or [N, C, H, W] as the data sets store them, or floats in [0, 1] in any shape the
    encoder takes ([N, C, H, W], [N, C*H*W]).
    """
    floats = to_float if images.dtype == torch.uint8 else (lambda x: x)
    return torch.cat([fn(floats(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])


class Variant:
    """What every model of the paper shares, and what the loop and the commands may ask of a model.

    A subclass sets the class attributes, returns its networks from networks() and makes its
    optimisers in __init__; it overrides draw() and step(), and whatever else differs. labels: the
    training split's labels, for a model that reads some (select_labels picks the allowed ones);
    None to use trained weights.
    """

    title = "a model"  # for messages: "{title} does not read --X"
    # Of the flags that only some models read (variants.OPTIONAL_FLAGS), those it reads; reads() narrows them.
    flags = ("prior_std", "encoder", "noise_dim")
    dis_lr = PAPER_MODELS_DIS_LR  # --dis_lr when not given
    # What step() adds up, in this order: the history's columns (mean over the epoch's steps).
    columns = ("recon_loss", "disc_loss", "gen_loss", "disc_accuracy")
    likelihood_protocol = False  # whether `evaluate` runs the paper's Table 1 protocol (Parzen window ...)
    has_baselines = False  # whether baselines() gives any
    predicts_category = False  # whether it infers q(y|x): predict_category and category_probabilities
    picture_names = ("samples", "reconstructions", "losses")  # what `draw` can make, besides "all"
    draw_flags = ()  # draw's flags for its pictures (interpolation's --classes, --pairs, --steps)
    # None, or why it cannot: said by the command line before any work.
    cannot_graph = None
    cannot_distribute = None

    def __init__(self, model_cfg: ModelConfig, train_cfg: TrainConfig, device, labels=None, cuda_graphs=False):
        self.check(model_cfg, train_cfg)
        self.model_cfg, self.train_cfg = model_cfg, train_cfg
        self.device = torch.device(device)
        self.capturable = cuda_graphs  # optimisers that a CUDA graph can replay
        self.labels = None
        if labels is not None and self.reads_labels():
            chosen = select_labels(labels, train_cfg.labels, model_cfg.n_classes, train_cfg.seed)
            self.labels = chosen.to(self.device)
        # the random streams of the prior draws and the labelled batches; the loop replaces them with its own
        self.prior_rng = torch.Generator(device=self.device).manual_seed(train_cfg.seed + 2)
        self.label_rng = torch.Generator().manual_seed(train_cfg.seed + LABEL_BATCH_SEED)
        self.prior_params = priors.parameters(train_cfg.prior, train_cfg.prior_std)
        self.history = []  # the epochs trained, for pictures and reports
        if train_cfg.precision == "bf16":
            # no weight-cast cache: each phase casts its weights once anyway, and a CUDA graph needs it off
            self.autocast = lambda: torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False)
        else:
            self.autocast = nullcontext
        # name -> module: the checkpoint's keys, built in this order (the order the seeded weights are drawn in)
        self.nets = {name: net.to(self.device) for name, net in self.networks(model_cfg, train_cfg).items()}
        self.optimizers = {}

    # -- what it is, before any work ---------------------------------------------------------------

    @classmethod
    def networks(cls, model_cfg, train_cfg):
        """Its networks, freshly initialised from the global torch generator: {name: module}."""
        raise NotImplementedError

    @classmethod
    def check(cls, model_cfg, train_cfg):
        """ValueError, in words a user can act on, for settings this model cannot train with."""
        if model_cfg.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {model_cfg.encoder!r}; choose one of: {', '.join(ENCODERS)}")
        priors.check_dim(train_cfg.prior, model_cfg.latent_dim)
        if train_cfg.labels < -1:
            raise ValueError(f"--labels must be a count >= 0, or -1 for all; got {train_cfg.labels}")

    @classmethod
    def reads(cls, model_cfg, train_cfg):
        """Of the flags that only some models read, those this model reads with these settings."""
        read = set(cls.flags)
        if train_cfg.prior != "gaussian":
            read.discard("prior_std")
        if model_cfg.encoder != "universal":
            read.discard("noise_dim")
        return read

    @classmethod
    def reads_labels_with(cls, model_cfg, train_cfg):
        """Whether training reads (some) training labels."""
        return False

    def reads_labels(self):
        return self.reads_labels_with(self.model_cfg, self.train_cfg)

    def labelled_examples(self, n_train):
        """How many training labels it was trained with (from the configs: a loaded model holds none)."""
        if not self.reads_labels():
            return 0
        return n_train if self.train_cfg.labels == -1 else self.train_cfg.labels

    # -- training ------------------------------------------------------------------------------------

    def _adam(self, params, lr):
        return adam(params, lr, self.train_cfg.adam_beta1, self.device, self.capturable)

    def prepare(self, data):
        """Called by the loop before training on `data`: keep what the steps need on the device."""

    def draw(self, rows):
        """Every random input of a step on the training images `rows` but dropout: the prior draws.
        Drawn outside a CUDA graph, whose replays then read them from static copies."""
        return {"z": self.sample_prior(len(rows))}

    def step(self, x, rows, draws, sums):
        """This model's phases on one batch x (the training images `rows`); adds each column to `sums`."""
        raise NotImplementedError

    def train(self, mode=True):
        for net in self.nets.values():
            net.train(mode)
        return self

    def eval(self):
        return self.train(False)

    @property
    def encoder(self):
        return self.nets["encoder"]

    @property
    def decoder(self):
        return self.nets["decoder"]

    @property
    def discriminator(self):
        return self.nets["discriminator"]

    # -- the prior -----------------------------------------------------------------------------------

    def sample_style(self, n, generator=None):
        """n draws from the --prior, on the device."""
        g = generator or self.prior_rng
        return priors.sample(self.train_cfg.prior, n, self.model_cfg.latent_dim, generator=g, device=self.device,
                             **self.prior_params)

    def sample_prior(self, n, generator=None, category=None):
        """n draws from the whole prior, as the decoder takes them; `category` k: all from class (or cluster) k's
        part, for the models that have classes (classes())."""
        assert category is None, "the plain AAE's prior has no classes"
        return self.sample_style(n, generator)

    def one_hot_prior(self, n, k, generator=None, category=None):
        """[one-hot of category i mod k (or of `category`), style draw]: the prior of a model whose decoder reads a
        one-hot class or category beside the style; a grid k wide shows one category a column."""
        z = self.sample_style(n, generator)
        y = torch.arange(n, device=self.device) % k if category is None else torch.full((n,), category,
                                                                                      device=self.device)
        return torch.cat([one_hot(y, k), z], dim=1)

    def classes(self):
        """(how many, what to call one) of the classes or clusters the model decodes from; (0, None) for none."""
        return 0, None

    @property
    def grid_columns(self):
        """Columns of a grid of sample_prior's draws: one a category where row i of the draws is category i."""
        return 10

    # -- using the trained model ---------------------------------------------------------------------

    def encode(self, images, labels=None):
        """The codes of images (uint8 [N, H, W] or floats in [0, 1]), in eval mode: [N, latent]."""
        with evaluating(self.encoder):
            return batched(self.encoder, images.to(self.device))

    def decode(self, codes):
        """Images [N, C, H, W] in [0, 1] decoded from codes as sample_prior gives them, in eval mode."""
        with evaluating(self.decoder):
            return torch.cat([self.decoder(c) for c in codes.to(self.device).split(1000)])

    def sample(self, n, seed=0):
        """n images decoded from prior draws of a CPU generator seeded with `seed`: the same on every device."""
        return self.decode(self.sample_prior(n, generator=torch.Generator().manual_seed(seed)))

    def reconstruct(self, images, labels=None):
        """decoder(encoder(x)) of images (uint8 or floats in [0, 1]), in eval mode; labels where the decoder
        reads them."""
        return self.decode(self.encode(images, labels))

    # -- numbers -------------------------------------------------------------------------------------

    @torch.no_grad()
    def test_reconstruction(self, images, labels=None, batch_size=1000):
        """Mean summed BCE per image (nats) of uint8 `images` [N, H, W], in eval mode."""
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        with evaluating(*self.nets.values()):
            for i in range(0, len(images), batch_size):
                x = to_float(images[i : i + batch_size].to(self.device))
                batch_labels = None if labels is None else labels[i : i + batch_size]
                with self.autocast():
                    logits = self.decoder.logits(self.code_for_decoder(x, batch_labels)).float()
                total += F.binary_cross_entropy_with_logits(logits, x, reduction="sum").double()
        return (total / len(images)).item()

    def code_for_decoder(self, x, labels=None):
        """What the decoder reads for images x (floats): the code."""
        return self.encoder(x)

    def epoch_numbers(self, test):
        """The figures each history row adds after the epoch's losses (test: the test Split)."""
        return {"test_recon_bce": self.test_reconstruction(test.images)}

    def own_numbers(self):
        """Whether it has numbers and a picture of its own (numbers(), "mode"): evaluate's protocol and
        the usual pictures say all there is of the plain AAE with its default prior and encoder."""
        return True

    def numbers(self, data):
        """Its figures on `data` (the test split; the training split where a figure says so)."""
        return {"test_recon_bce": self.test_reconstruction(data.test.images, data.test.labels)}

    def baselines(self, data, reference=None):
        """The obvious baselines of its numbers (baselines.py), on `data`: {name: value}; {} where it has none.
        reference: another trained model whose codes a baseline may also use (k-means on a plain AAE's codes)."""
        return {}

    def reads_reference(self):
        """Whether baselines() reads a reference model's codes."""
        return False

    def settings(self, data):
        """What was trained, for metrics.json and report.md."""
        m, t = self.model_cfg, self.train_cfg
        return {"dataset": data.name, "model": self.title, "mode": m.mode, "encoder": m.encoder, "prior": t.prior,
                "label_discriminator": m.label_discriminator, "latent_dim": m.latent_dim,
                "labelled_examples": self.labelled_examples(len(data.train.images)), "epochs": len(self.history)}

    def paper_figure(self, settings):
        """The paper's figure for this experiment on full MNIST, where it gives one, else None."""
        return None

    # -- pictures ------------------------------------------------------------------------------------

    def pictures(self, data, folder, what=("all",), seed=0, **options):
        """The pictures `what` (from picture_names, or "all") into `folder`; returns their paths."""
        folder, wanted, written = Path(folder), set(what), []
        folder.mkdir(parents=True, exist_ok=True)
        if wanted & {"all", "mode"} and "mode" in self.picture_choices():
            written += self.own_pictures(data, folder)
        if wanted & {"all", "interpolation"} and "interpolation" in self.picture_names:
            written.append(self.draw_interpolation(data.test, folder / "interpolation.png", seed=seed, **options))
        if wanted & {"all", "samples"}:
            written.append(self.draw_samples(folder / "samples.png", seed=seed))
        if wanted & {"all", "reconstructions"}:
            x = data.test.images[:50]
            written.append(plots.reconstruction_grid(to_float(x), self.reconstruct(x, data.test.labels[:50]).cpu(),
                                                     folder / "reconstructions.png"))
        if wanted & {"all", "losses"} and self.history:
            written.append(plots.draw_losses(self.history, folder / "losses.png"))
        return written

    def picture_choices(self):
        """The pictures `draw` can make of it, besides "all"."""
        return self.picture_names

    def draw_samples(self, path, seed=0):
        """Prior draws decoded, 10 a row."""
        return plots.save_grid(self.sample(100, seed=seed), path, nrow=10)

    def own_pictures(self, data, folder):
        """Its own picture(s), the paper's figure of it; returns their paths."""
        return []


class AAE(Variant):
    """§2: the plain Adversarial Autoencoder, with any prior and any of the three encoders of §2.1.

    Per batch: reconstruction, then the discriminator on prior draws against codes, then the encoder
    as generator. Both adversarial phases see the same codes, since the discriminator phase does not
    change the encoder: one encoder forward (and one set of dropout masks) instead of two, ~7% of a step.
    """

    title = "the plain AAE (--mode unsupervised)"
    dis_lr = TrainConfig.dis_lr
    likelihood_protocol = True
    picture_names = ("interpolation", "samples", "reconstructions", "losses", "mode")
    draw_flags = ("classes", "pairs", "steps")

    def __init__(self, model_cfg, train_cfg, device, labels=None, cuda_graphs=False):
        super().__init__(model_cfg, train_cfg, device, labels, cuda_graphs)
        c = train_cfg
        self.optimizers = {
            "reconstruction": self._adam([*self.encoder.parameters(), *self.decoder.parameters()], c.gen_lr),
            "discriminator": self._adam(self.discriminator.parameters(), c.dis_lr),
            "generator": self._adam(self.encoder.parameters(), c.dis_lr),
        }

    @classmethod
    def networks(cls, model_cfg, train_cfg):
        m = model_cfg
        return {"encoder": ENCODERS[m.encoder](m), "decoder": Decoder(m, cls.decoder_inputs(m)),
                "discriminator": Discriminator(m, cls.discriminator_inputs(m))}

    @classmethod
    def decoder_inputs(cls, model_cfg):
        return model_cfg.latent_dim

    @classmethod
    def discriminator_inputs(cls, model_cfg):
        return model_cfg.latent_dim

    def step(self, x, rows, draws, sums):
        enc, opt, ac = self.encoder, self.optimizers, self.autocast
        sums[0] += reconstruction_phase(enc, self.decoder, opt["reconstruction"], x, ac)
        with ac():
            codes = enc(x)  # kept with its graph for the generator phase's backward
        d_loss, d_acc = discriminator_phase(None, self.discriminator, opt["discriminator"], x, draws["z"], ac,
                                            codes=codes)
        sums[1] += d_loss
        sums[3] += d_acc
        sums[2] += generator_phase(None, self.discriminator, opt["generator"], x, ac, codes=codes)

    def own_numbers(self):
        return self.model_cfg.encoder != "deterministic" or self.train_cfg.prior != "gaussian"

    def numbers(self, data):
        train, test = data.train, data.test
        out = super().numbers(data)
        test_z = self.encode(test.images)
        out["knn_accuracy"] = metrics.knn_accuracy(self.encode(train.images), train.labels, test_z, test.labels)
        g = torch.Generator(device=self.prior_rng.device).manual_seed(self.train_cfg.seed)
        out["mmd_to_prior"] = metrics.mmd(test_z, self.sample_prior(len(test_z), generator=g))
        return out

    def picture_choices(self):
        return self.picture_names if self.own_numbers() else tuple(p for p in self.picture_names if p != "mode")

    def own_pictures(self, data, folder):
        """Figs. 2-4: the 2-D test codes over prior draws."""
        if self.model_cfg.latent_dim != 2 or not self.own_numbers():
            return []
        g = torch.Generator(device=self.prior_rng.device).manual_seed(self.train_cfg.seed)
        prior = self.sample_prior(5000, generator=g).cpu()
        return [plots.scatter(self.encode(data.test.images).cpu(), data.test.labels, folder / "latent_codes.png",
                              self.scatter_title(), background=prior)]

    def scatter_title(self):
        return f"test codes, {self.train_cfg.prior} prior"

    def draw_interpolation(self, test, path, n_pairs=8, steps=10, classes=None, seed=0):
        """The original's strips: each row a linear walk in code space between two test images, framed by them."""
        images = test.images  # the data sets' uint8 [N, H, W], or floats in [0, 1]
        shape = self.model_cfg.image_shape
        images = to_float(images) if images.dtype == torch.uint8 else images.reshape(len(images), *shape)
        a, b = pick_pairs(test.labels, n_pairs, classes, torch.Generator().manual_seed(seed))
        za, zb = self.encode(images[a]), self.encode(images[b])  # [P, latent]
        t = torch.linspace(0, 1, steps, device=za.device).view(1, steps, 1)
        z = za.unsqueeze(1) * (1 - t) + zb.unsqueeze(1) * t  # [P, steps, latent]
        strips = self.decode(z.flatten(0, 1)).cpu()  # [P * steps, C, H, W]
        return plots.interpolation_grid(images[a], strips.view(len(a), steps, *strips.shape[1:]), images[b], path)


def pick_pairs(labels, n_pairs, classes=None, generator=None):
    """Indices (a, b) of n_pairs image pairs: random ones, or class classes[0] -> classes[1]."""
    if classes is None:
        if 2 * n_pairs > len(labels):
            raise ValueError(f"--pairs {n_pairs} needs {2 * n_pairs} different test images and the test split has "
                             f"{len(labels)}: use --pairs {len(labels) // 2} or fewer, or --classes A B")
        order = torch.randperm(len(labels), generator=generator)
        return order[:n_pairs], order[n_pairs : 2 * n_pairs]
    ends = []
    for c in classes:
        idx = (labels == c).nonzero().flatten()
        if len(idx) == 0:
            raise ValueError(f"class {c} does not occur in the test split")
        ends.append(idx[torch.randint(len(idx), (n_pairs,), generator=generator)])
    return ends[0], ends[1]
