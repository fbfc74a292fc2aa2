"""The paper's other AAEs (Makhzani et al. 2016, §§2.3-7): networks, extra phases, training and numbers.

    import modes
    trainer = modes.make_trainer(model_cfg, train_cfg, "cpu", data.train.labels)  # Trainer or ModeTrainer
    trainer.fit(data)
    modes.classification_error(modes.predict_category(trainer.encoder, data.test.images), data.test.labels)

mode_outputs.py turns a trained model into its numbers and pictures.

ModelConfig.mode (and label_discriminator) picks the model; main.py's --mode etc. set them:

  unsupervised     the plain AAE of train.py. With label_discriminator (§2.3, Figs. 3-4) the
                   discriminator also sees a one-hot label with an extra "unlabelled" slot, and prior
                   draws come from the label's mixture component / swiss-roll segment.
  supervised       (§4, Fig. 7) the decoder gets [one-hot label, code], so the code keeps only style;
                   the discriminator sees [code, one-hot label] (ours: the paper's sees the code).
  semi_supervised  (§5, Table 2) the encoder outputs a category y (categorical prior) and a style z
                   (the --prior), each with its own discriminator, plus a cross-entropy phase on the
                   labelled subset. Ours, not the paper's: y is the one-hot of q(y|x)'s argmax with the
                   softmax's gradient, y's generator phase also spreads each batch over the categories
                   and makes each image sure of its own, and z's discriminator sees [z, y]
                   (CategoricalEncoder, category_generator_phase, ModeTrainer.categorical_step).
  clustering       (§6, Table 3) semi_supervised with `clusters` categories and no labels at all.
  dim_reduction    (§7) as semi_supervised (or clustering with labels=0), but the decoder reads
                   the representation W y + z: learned cluster heads W plus the style.

Labels: select_labels() picks the labelled subset once, balanced and from the seed. A ModeTrainer
holds only that tensor (-1 = unlabelled) and never reads the dataset's training labels; evaluation
reads test labels, and the clustering error the training labels (to name each cluster).
"""

import math
from contextlib import contextmanager, nullcontext
from dataclasses import fields, replace
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

import priors
from models import CATEGORICAL, ENCODERS, MODES, Decoder, Discriminator, build_models, mlp
from train import (UNSAVED_VALUES, NonFiniteLoss, TrainConfig, Trainer, adam, as_float, discriminator_phase, frozen,
                   generator_phase, reconstruction_phase)

LABELLED_PRIORS = ("mixture", "swiss_roll")  # a component / segment per class
# Offsets from the seed (Trainer uses seed, +1, +2): which examples are labelled; labelled batches.
SELECT_SEED, LABEL_BATCH_SEED = 3, 4
# dim_reduction: cluster heads are pushed at least this many style-prior stds apart (the paper's
# threshold; the value is ours), so the style blobs around them (~3 std radius) barely overlap.
HEAD_MARGIN = 6.0
# The discriminators' Adam rate (--dis_lr) when none is given, for every model but the plain AAE: the rate
# the modes and the label discriminator were tuned and measured at (README). The plain AAE's 2e-4 let the
# tests' tiny clustering runs collapse to one category in 3 of 4 seeds (8e-4: 2 to 7 of 12 categories
# used), and gave 53.1 % error against 49.1 % on mnist-sample (clustering, 16 clusters, 10 epochs).
DIS_LR = 8e-4
SIDE_COLUMNS = ("disc_y_loss", "gen_y_loss", "disc_y_accuracy", "classification_loss", "cluster_head_loss")


# -- configuration ------------------------------------------------------------------------------


def reads_labels(model_cfg, train_cfg):
    """Whether training reads (some) training labels."""
    if model_cfg.mode == "supervised":
        return True
    if model_cfg.mode in ("semi_supervised", "dim_reduction") or model_cfg.label_discriminator:
        return train_cfg.labels != 0
    return False


def categories(model_cfg, train_cfg):
    """Size of the categorical code y: one per class when labels train it, else `clusters`."""
    return model_cfg.n_classes if reads_labels(model_cfg, train_cfg) else model_cfg.clusters


def default_dis_lr(mode, label_discriminator):
    """--dis_lr when not given: the plain AAE's TrainConfig default, or DIS_LR for the paper's other models."""
    return TrainConfig.dis_lr if mode == "unsupervised" and not label_discriminator else DIS_LR


def check_configs(model_cfg, train_cfg):
    """ValueError, in words a user can act on, for options that contradict each other."""
    m, t = model_cfg, train_cfg
    if m.mode not in MODES:
        raise ValueError(f"unknown mode {m.mode!r}; choose one of: {', '.join(MODES)}")
    if m.encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {m.encoder!r}; choose one of: {', '.join(ENCODERS)}")
    if t.labels < -1:
        raise ValueError(f"--labels must be a count >= 0, or -1 for all; got {t.labels}")
    if m.label_discriminator:
        if m.mode != "unsupervised":
            raise ValueError(f"--label_discriminator goes with --mode unsupervised; --mode {m.mode} uses labels its own way")
        if t.prior not in LABELLED_PRIORS or m.latent_dim != 2:
            raise ValueError("--label_discriminator ties each class to a part of a 2-D prior: "
                             "use --prior mixture or swiss_roll with --latent_dim 2")
    if m.mode in CATEGORICAL and m.encoder != "deterministic":
        raise ValueError(f"--mode {m.mode} has its own encoder (category and style heads); drop --encoder {m.encoder}")
    if m.mode == "supervised" and t.labels != -1:
        raise ValueError("--mode supervised decodes every image with its label: drop --labels, "
                         "or use --mode semi_supervised")
    if m.mode == "clustering" and t.labels > 0:
        raise ValueError("--mode clustering reads no labels: drop --labels (semi_supervised reads them)")
    if m.mode == "semi_supervised" and t.labels == 0:
        raise ValueError("--mode semi_supervised with --labels 0 has no labels: use --mode clustering")
    if m.mode in CATEGORICAL and categories(m, t) < 2:
        raise ValueError(f"--clusters {m.clusters} puts every image in one cluster: use 2 or more")


def select_labels(labels, n, n_classes, seed):
    """The only training labels a ModeTrainer gets: [N] long, the label on the labelled subset, -1 elsewhere.

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
    chosen = torch.full_like(labels, -1)
    g = torch.Generator().manual_seed(seed + SELECT_SEED)
    for c in range(n_classes):
        want = n // n_classes + (c < n % n_classes)
        members = (labels == c).nonzero().flatten()
        if len(members) < want:
            raise ValueError(f"--labels {n}: class {c} has only {len(members)} training examples, {want} wanted")
        chosen[members[torch.randperm(len(members), generator=g)[:want]]] = c
    return chosen


def style_std(train_cfg, latent_dim):
    """The --prior's mean per-dimension std: the unit of the cluster heads' spacing."""
    params = {"std": train_cfg.prior_std} if train_cfg.prior == "gaussian" else {}
    return float(priors.describe(train_cfg.prior, latent_dim, **params)["std"].mean())


# -- networks of the categorical modes ------------------------------------------------------------


class CategoricalEncoder(nn.Module):
    """q(y|x) and q(z|x) from one network: logits of K categories and a style code (paper §§5-7).

    forward(x) is the decoder's input [y, z]: [N, K + latent], so decoder(encoder(x)) is the
    autoencoder and train.reconstruction_phase / test_reconstruction apply unchanged.

    y is the one-hot of the most probable category, with the softmax's gradient (straight-through),
    where the paper feeds the softmax itself. Measured on mnist-sample: with the softmax, the category
    discriminator won by telling a soft vector from an exact one-hot; its generator pushed every image's
    softmax towards the same corner until it saturated (max prob 0.9998), and a saturated softmax passes
    no gradient back, so no image could leave: 1 of 16 clusters used after 2 epochs. A one-hot cannot
    be told from a prior draw by its shape, only by how often each category comes up — what the
    categorical prior is about — and the decoder then reads a category it cannot ignore.
    dim_reduction's decoder still reads the softmax (hard=False): with a one-hot its 2-D map W y + z
    was a few blobs (5-NN on it 81.8 %, against 84.6 % with the softmax; mnist-sample, 10 epochs).
    """

    def __init__(self, cfg, n_categories, hard=True):
        super().__init__()
        self.n_categories = n_categories
        self.hard = hard  # False: the decoder reads the softmax (dim_reduction's W y + z is then a map, §7)
        self.net = mlp([cfg.image_size, cfg.hidden_dim, cfg.hidden_dim, n_categories + cfg.latent_dim], cfg.dropout)

    def split(self, x):
        out = self.net(x.flatten(1))  # [N, K + latent]
        return out[:, : self.n_categories], out[:, self.n_categories :]  # logits of y [N, K], style z [N, latent]

    def category(self, x):
        """q(y|x), the softmax: [N, K]."""
        return self.split(x)[0].softmax(1)

    def one_hot(self, x):
        """y: the one-hot of argmax q(y|x), with q(y|x)'s gradient: [N, K]."""
        return straight_through(self.split(x)[0].softmax(1))

    def style(self, x):
        return self.split(x)[1]

    def style_and_category(self, x):
        """[z, y]: the style beside the one-hot category, which passes no gradient: [N, latent + K]."""
        logits, z = self.split(x)
        return torch.cat([z, F.one_hot(logits.argmax(1), self.n_categories).to(z.dtype)], dim=1)

    def forward(self, x):
        logits, z = self.split(x)
        y = straight_through(logits.softmax(1)) if self.hard else logits.softmax(1)
        return torch.cat([y, z.to(logits.dtype)], dim=1)


def straight_through(probs):
    """The one-hot of each row's argmax in the forward pass, the gradient of `probs` in the backward."""
    hard = F.one_hot(probs.argmax(1), probs.shape[1]).to(probs.dtype)
    return hard + probs - probs.detach()


class HeadsDecoder(nn.Module):
    """dim_reduction's p(x | W y + z): [y, z] becomes the representation W y + z, then a Decoder (§7).

    W = head_scale * heads: cluster head k is row k, kept HEAD_MARGIN apart (in heads' units) by
    cluster_head_phase; head_scale (the style prior's std) is saved with the weights.
    """

    def __init__(self, cfg, n_categories, head_scale):
        super().__init__()
        self.n_categories = n_categories
        self.heads = nn.Parameter(HEAD_MARGIN * torch.randn(n_categories, cfg.latent_dim))
        self.register_buffer("head_scale", torch.tensor(float(head_scale)))
        self.decoder = Decoder(cfg)

    def represent(self, code):
        y, z = code[:, : self.n_categories], code[:, self.n_categories :]
        return y @ (self.head_scale * self.heads).to(y.dtype) + z  # [N, K] @ [K, latent] + [N, latent]

    def logits(self, code):
        return self.decoder.logits(self.represent(code))

    def forward(self, code):
        return torch.sigmoid(self.logits(code))


def networks_for(model_cfg, train_config):
    """The encoder, decoder and discriminator of a mode's checkpoint for its configs (`train_config` a
    dict), the head scale left at 1: what utils.check_fits compares the saved tensors' shapes with."""
    if model_cfg.mode == "supervised":
        return build_models(model_cfg)
    train_cfg = train_config_from(train_config)
    nets = build_mode_models(model_cfg, categories(model_cfg, train_cfg))
    return nets[:3]


def train_config_from(saved):
    """TrainConfig from a checkpoint's dict, ignoring keys this version does not know; fields it lacks take
    train.UNSAVED_VALUES (what it was trained with) or their default."""
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{**UNSAVED_VALUES, **{k: v for k, v in saved.items() if k in names}})


def build_mode_models(cfg, n_categories, head_scale=1.0):
    """Encoder, decoder, style discriminator (it reads [z, y]) and category discriminator of a categorical mode."""
    encoder = CategoricalEncoder(cfg, n_categories, hard=cfg.mode != "dim_reduction")
    if cfg.mode == "dim_reduction":
        decoder = HeadsDecoder(cfg, n_categories, head_scale)
    else:
        decoder = Decoder(cfg, n_categories + cfg.latent_dim)
    return encoder, decoder, Discriminator(cfg, cfg.latent_dim + n_categories), Discriminator(cfg, n_categories)


# -- the extra phases -----------------------------------------------------------------------------


def classification_phase(encoder, optimizer, x, labels, autocast=nullcontext):
    """q(y|x) takes one step on the cross-entropy of a labelled batch (§5's semi-supervised phase)."""
    with autocast():
        logits = encoder.split(x)[0].float()
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def category_generator_phase(encoder, discriminator, optimizer, x, autocast=nullcontext, balance=1.0, confidence=0.0):
    """The encoder takes one step towards one-hot codes y the category discriminator calls prior draws,
    plus `balance` * (log K - entropy of the batch's mean q(y|x)) + `confidence` * (mean entropy of q(y|x)).

    Both terms are ours, not the paper's; with equal weights they are log K minus the mutual information
    of image and category that the batch estimates. The balance term: the discriminator judges each code
    alone; when every image moves to the same category at once (as they do at first: the discriminator's
    gradient is the same for all of them), it cannot push them apart fast enough. It is 0 when the batch
    spreads its probability evenly over the K categories, and grows as the batch gathers in fewer.
    The confidence term: the discriminator sees one-hots (straight_through), so nothing else asks q(y|x)
    to be sure of its category; with the balance term alone q(y|x) stayed near uniform (clustering,
    mnist-sample: mean max probability 0.12 of 16 categories, argmax changed by the dropout draw for 31 %
    of test images). Returns the total loss.
    """
    with frozen(discriminator):
        with autocast():
            probs = encoder.category(x).float()  # [N, K]
            logits = discriminator(straight_through(probs)).float()
        adversarial = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        mean = probs.mean(0)
        spread = math.log(len(mean)) - entropy(mean)
        loss = adversarial + balance * spread + confidence * entropy(probs).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.detach()


def entropy(probs):
    """Entropy (nats) of each distribution along the last dimension."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1)


def cluster_head_phase(decoder, optimizer):
    """The cluster heads take one step apart: sum over pairs of relu(HEAD_MARGIN - distance) (§7)."""
    loss = F.relu(HEAD_MARGIN - torch.pdist(decoder.heads)).sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


# -- training -------------------------------------------------------------------------------------


class ModeTrainer(Trainer):
    """A Trainer for every model but the plain AAE; same epochs, checkpoints and exact resume.

    labels: [N] long, the label of each labelled training example and -1 elsewhere (select_labels):
    the only training labels it reads. None when the mode reads none (or to load weights only).
    """

    def __init__(self, model_cfg, train_cfg, device, labels=None, **kwargs):
        check_configs(model_cfg, train_cfg)
        assert kwargs.get("world_size", 1) == 1, "a ModeTrainer trains in one process"
        categorical = model_cfg.mode in CATEGORICAL
        # Trainer builds the plain networks; the categorical modes replace them below. Steps run eagerly:
        # train.GraphedStep captures the plain three phases only.
        super().__init__(replace(model_cfg, mode="unsupervised") if categorical else model_cfg, train_cfg, device,
                         **{**kwargs, "cuda_graphs": False})
        self.model_cfg = model_cfg
        self.reads_labels = reads_labels(model_cfg, train_cfg)
        self.labels = None if labels is None else torch.as_tensor(labels).long().to(self.device)
        self.label_rng = torch.Generator().manual_seed(train_cfg.seed + LABEL_BATCH_SEED)
        self.n_categories = categories(model_cfg, train_cfg) if categorical else model_cfg.n_classes
        self.side = torch.zeros(len(SIDE_COLUMNS), device=self.device, dtype=torch.float64)  # this epoch's sums
        self.side_steps = 0
        self.side_columns = ()
        self.discriminator_y = None
        self.labelled = self.test_labels = None  # set by fit()
        if categorical:
            head_scale = style_std(train_cfg, model_cfg.latent_dim) if model_cfg.mode == "dim_reduction" else 1.0
            nets = build_mode_models(model_cfg, self.n_categories, head_scale)
            self.encoder, self.decoder, self.discriminator, self.discriminator_y = (m.to(self.device) for m in nets)
            self.synced = SimpleNamespace(encoder=self.encoder, decoder=self.decoder, discriminator=self.discriminator)
            c, dev, enc = train_cfg, self.device, self.encoder
            self.optimizers = {
                "reconstruction": adam([*enc.parameters(), *self.decoder.parameters()], c.gen_lr, c.adam_beta1, dev),
                "discriminator": adam(self.discriminator.parameters(), c.dis_lr, c.adam_beta1, dev),
                "generator": adam(enc.parameters(), c.dis_lr, c.adam_beta1, dev),
                "discriminator_y": adam(self.discriminator_y.parameters(), c.dis_lr, c.adam_beta1, dev),
                "generator_y": adam(enc.parameters(), c.dis_lr, c.adam_beta1, dev),
            }
            self.side_columns = ("disc_y_loss", "gen_y_loss", "disc_y_accuracy")
            if self.reads_labels:
                self.optimizers["classification"] = adam(enc.parameters(), c.classification_lr, c.adam_beta1, dev)
                self.side_columns += ("classification_loss",)
            if model_cfg.mode == "dim_reduction":
                self.optimizers["cluster_heads"] = adam([self.decoder.heads], c.gen_lr, c.adam_beta1, dev)
                self.side_columns += ("cluster_head_loss",)

    # -- priors -----------------------------------------------------------------------------------

    def sample_style(self, n, generator=None):
        """n draws from the --prior (the style prior of the categorical modes)."""
        return Trainer.sample_prior(self, n, generator)

    def sample_prior(self, n, generator=None):
        """n draws from the whole prior, as the decoder takes them.

        Supervised and categorical modes: [one-hot of category i mod K, style], so a grid K wide
        shows one category a column; otherwise the --prior alone.
        """
        z = self.sample_style(n, generator)
        if self.model_cfg.mode == "unsupervised":
            return z
        y = F.one_hot(torch.arange(n, device=self.device) % self.n_categories, self.n_categories).float()
        return torch.cat([y, z], dim=1)

    def sample_for_labels(self, y):
        """Draws from the --prior's component (segment) y[i], or any one where y[i] is -1 (§2.3)."""
        g = self.prior_rng
        y = y.to(g.device)
        anywhere = torch.randint(self.model_cfg.n_classes, y.shape, generator=g, device=g.device)
        index = torch.where(y >= 0, y, anywhere)
        return priors.sample(self.cfg.prior, len(y), self.model_cfg.latent_dim, generator=g, device=self.device,
                             index=index, n_components=self.model_cfg.n_classes)

    # -- one batch --------------------------------------------------------------------------------

    def train_batch(self, train_images, index, sums):
        self.train_step(as_float(train_images[index]), sums, index)

    def train_step(self, x, sums, rows=None):
        """This mode's phases on one batch; rows: its indices in the training split, to look labels up."""
        if self.reads_labels:
            assert self.labels is not None and rows is not None, "training a mode that reads labels needs them"
        if self.model_cfg.mode in CATEGORICAL:
            self.categorical_step(x, sums)
        elif self.model_cfg.mode == "supervised":
            self.supervised_step(x, self.labels[rows], sums)
        else:
            y = self.labels[rows] if self.labels is not None else torch.full((len(x),), -1, device=self.device)
            self.label_discriminator_step(x, y, sums)
        self.side_steps += 1

    def supervised_step(self, x, y, sums):
        """§4: reconstruction decodes [one-hot label, code]; the discriminator sees [code, one-hot label]
        against [prior draw, the same one-hot].

        The paper's discriminator sees the code alone, which asks only that all codes together look
        like the prior: the code may still say which digit it is. Given the label it asks that the
        codes of each digit look like the prior, so the code cannot tell the digits apart. On
        mnist-sample (10 epochs) the label was found from the code by 5-NN 33 % of the time with a
        2-D code and the paper's discriminator, 22 % with this one (10 % is chance); 76 % with 8-D.
        """
        enc, dec, dis, opt, ac = self.encoder, self.decoder, self.discriminator, self.optimizers, self.autocast
        onehot = F.one_hot(y, self.model_cfg.n_classes).float()
        tagged = lambda images: torch.cat([enc(images), onehot], 1)  # noqa: E731
        sums[0] += reconstruction_phase(lambda images: torch.cat([onehot, enc(images)], 1), dec,
                                        opt["reconstruction"], x, ac)
        z_prior = torch.cat([self.sample_style(len(x)), onehot], 1)
        d_loss, d_acc = discriminator_phase(tagged, dis, opt["discriminator"], x, z_prior, ac)
        sums[1] += d_loss
        sums[3] += d_acc
        sums[2] += generator_phase(tagged, dis, opt["generator"], x, ac)

    def label_discriminator_step(self, x, y, sums):
        """§2.3: the discriminator sees [code, one-hot label] against [draw from the label's part, same one-hot].

        Unlabelled examples (y = -1) take the extra slot n_classes, and their prior draws any part.
        """
        enc, dis, opt, ac = self.encoder, self.discriminator, self.optimizers, self.autocast
        k = self.model_cfg.n_classes
        tag = F.one_hot(torch.where(y >= 0, y, k), k + 1).float()  # [B, k + 1]
        tagged = lambda images: torch.cat([enc(images), tag], 1)  # noqa: E731
        sums[0] += reconstruction_phase(enc, self.decoder, opt["reconstruction"], x, ac)
        z_prior = torch.cat([self.sample_for_labels(y), tag], 1)
        d_loss, d_acc = discriminator_phase(tagged, dis, opt["discriminator"], x, z_prior, ac)
        sums[1] += d_loss
        sums[3] += d_acc
        sums[2] += generator_phase(tagged, dis, opt["generator"], x, ac)

    def categorical_step(self, x, sums):
        """§§5-7 per batch: reconstruction; each adversarial network's discriminator and generator phases
        (style z against the --prior, category y against Cat(K)); cross-entropy on a labelled batch;
        the cluster heads' phase (dim_reduction)."""
        enc, opt, ac = self.encoder, self.optimizers, self.autocast
        sums[0] += reconstruction_phase(enc, self.decoder, opt["reconstruction"], x, ac)
        z_prior = self.sample_style(len(x))
        y_prior = priors.categorical(len(x), self.n_categories, generator=self.prior_rng, device=self.device)
        # The style discriminator sees [z, y] against [prior z, prior y] drawn independently: each category's
        # styles must look like the prior, so the style cannot say the category (README, "Where we depart").
        style, z_prior = enc.style_and_category, torch.cat([z_prior, y_prior], 1)
        d_loss, d_acc = discriminator_phase(style, self.discriminator, opt["discriminator"], x, z_prior, ac)
        dy_loss, dy_acc = discriminator_phase(enc.one_hot, self.discriminator_y, opt["discriminator_y"], x, y_prior, ac)
        sums[1] += d_loss
        sums[3] += d_acc
        sums[2] += generator_phase(style, self.discriminator, opt["generator"], x, ac)
        side = {"disc_y_loss": dy_loss, "disc_y_accuracy": dy_acc,
                "gen_y_loss": category_generator_phase(enc, self.discriminator_y, opt["generator_y"], x, ac,
                                                       self.cfg.balance_weight, self.cfg.confidence_weight)}
        if self.reads_labels:
            images, labels = self.labelled
            pick = torch.randint(len(labels), (min(self.cfg.batch_size, len(labels)),), generator=self.label_rng)
            pick = pick.to(self.device)
            side["classification_loss"] = classification_phase(enc, opt["classification"], as_float(images[pick]),
                                                               labels[pick], ac)
        if self.model_cfg.mode == "dim_reduction":
            side["cluster_head_loss"] = cluster_head_phase(self.decoder, opt["cluster_heads"])
        for name, value in side.items():
            self.side[SIDE_COLUMNS.index(name)] += value

    # -- epochs and evaluation --------------------------------------------------------------------

    def fit(self, data, evaluate=None, **kwargs):
        """Trainer.fit, with this mode's losses and test error in each history row."""
        self.test_labels = data.test.labels.to(self.device)
        test_images = data.test.images.to(self.device)
        if self.reads_labels and self.model_cfg.mode in CATEGORICAL:
            where = (self.labels >= 0).nonzero().flatten()
            self.labelled = (data.train.images[where.cpu()].to(self.device), self.labels[where])

        def mode_row(trainer):
            row = self.epoch_row(test_images)
            row.update((evaluate(trainer) or {}) if evaluate is not None else {})
            return row

        return super().fit(data, evaluate=mode_row, **kwargs)

    def epoch_row(self, test_images):
        means = (self.side / max(self.side_steps, 1)).tolist()
        row = {name: means[SIDE_COLUMNS.index(name)] for name in self.side_columns}
        for name, value in row.items():
            if not math.isfinite(value):
                raise NonFiniteLoss(name.removesuffix("_loss"), self.epoch)
        self.side.zero_()
        self.side_steps = 0
        if self.model_cfg.mode in CATEGORICAL and self.reads_labels:
            row["test_error"] = classification_error(predict_category(self.encoder, test_images), self.test_labels)
        return row

    def test_reconstruction(self, test_images):
        if self.model_cfg.mode != "supervised":
            return super().test_reconstruction(test_images)
        bce = labelled_reconstruction(self.encoder, self.decoder, test_images, self.test_labels,
                                      self.model_cfg.n_classes, self.autocast)
        return bce

    # -- checkpoints ------------------------------------------------------------------------------

    def state_dict(self):
        state = super().state_dict()
        state["mode_state"] = {"side": self.side.cpu(), "side_steps": self.side_steps,
                               "label_rng": self.label_rng.get_state()}
        if self.discriminator_y is not None:
            state["discriminator_y"] = self.discriminator_y.state_dict()
        return state

    def load_state_dict(self, ckpt):
        if self.discriminator_y is not None:
            self.discriminator_y.load_state_dict(ckpt["discriminator_y"])
        super().load_state_dict(ckpt)
        mode_state = ckpt["mode_state"]
        self.side = mode_state["side"].to(self.device)
        self.side_steps = mode_state["side_steps"]
        self.label_rng.set_state(mode_state["label_rng"])


def make_trainer(model_cfg, train_cfg, device, train_labels=None, **kwargs):
    """The trainer the configs ask for: train.Trainer for the plain AAE (bit for bit as before), else a
    ModeTrainer given only the training labels it may read (select_labels). kwargs go to Trainer
    (rank, world_size, cuda_graphs)."""
    check_configs(model_cfg, train_cfg)
    if model_cfg.mode == "unsupervised" and not model_cfg.label_discriminator:
        return Trainer(model_cfg, train_cfg, device, **kwargs)
    if kwargs.get("world_size", 1) > 1:
        what = "--label_discriminator" if model_cfg.label_discriminator else f"--mode {model_cfg.mode}"
        raise ValueError(f"{what} trains in one process for now; run it without torchrun")
    labels = None
    if reads_labels(model_cfg, train_cfg):
        assert train_labels is not None, f"mode {model_cfg.mode} reads labels: pass the training labels"
        labels = select_labels(train_labels, train_cfg.labels, model_cfg.n_classes, train_cfg.seed)
    return ModeTrainer(model_cfg, train_cfg, device, labels, **kwargs)


def load_trainer(path, device="cpu"):
    """The trainer of a checkpoint (file or weights folder), networks and state loaded, in eval mode (dropout
    off, mean codes) as utils.load_models returns them; for using the weights (continuing training goes
    through main.py --resume, and fit() switches them back to training). Sets torch's global RNG state."""
    import utils  # lazy: utils sits below train

    ckpt = utils.load_checkpoint(path, map_location=device)
    model_cfg = utils.model_config_from(ckpt)
    train_cfg = train_config_from(ckpt["train_config"])
    plain = model_cfg.mode == "unsupervised" and not model_cfg.label_discriminator
    trainer = Trainer(model_cfg, train_cfg, device) if plain else ModeTrainer(model_cfg, train_cfg, device)
    trainer.load_state_dict(ckpt)
    for net in (trainer.encoder, trainer.decoder, trainer.discriminator, getattr(trainer, "discriminator_y", None)):
        if net is not None:
            net.eval()
    return trainer


# -- numbers --------------------------------------------------------------------------------------


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

    images: uint8 [N, 28, 28] as the data sets store them, or floats in [0, 1] in any shape the
    encoder takes ([N, 1, 28, 28], [N, 784]), as utils.load_models' networks take them.
    """
    floats = as_float if images.dtype == torch.uint8 else (lambda x: x)
    return torch.cat([fn(floats(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])


def on_device(images, module):
    return images.to(next(module.parameters()).device)


def predict_category(encoder, images):
    """argmax_k q(y = k | x) of images (uint8 [N, 28, 28] or floats in [0, 1], see batched): [N] long."""
    with evaluating(encoder):
        return batched(lambda x: encoder.split(x)[0].argmax(1), on_device(images, encoder))


def codes_of(encoder, images):
    """The encoder's style codes (eval mode) of images (uint8 or floats, see batched): [N, latent]."""
    style = encoder.style if isinstance(encoder, CategoricalEncoder) else encoder
    with evaluating(encoder):
        return batched(style, on_device(images, encoder))


def classification_error(predicted, labels):
    return float((predicted.cpu() != labels.cpu()).double().mean())


def labelled_reconstruction(encoder, decoder, images, labels, n_classes, autocast=nullcontext, batch_size=1000):
    """Mean summed BCE per image (nats) when the decoder also gets each image's label (supervised)."""
    total = torch.zeros((), dtype=torch.float64, device=images.device)
    with evaluating(encoder, decoder):
        for i in range(0, len(images), batch_size):
            x = as_float(images[i : i + batch_size])
            onehot = F.one_hot(labels[i : i + batch_size].to(x.device), n_classes).float()
            with autocast():
                logits = decoder.logits(torch.cat([onehot, encoder(x)], 1)).float()
            total += F.binary_cross_entropy_with_logits(logits, x, reduction="sum").double()
    return (total / len(images)).item()


def category_effect(encoder, decoder, images, seed=0):
    """How much the decoder reads the category: the mean absolute pixel change when each image's one-hot y
    (argmax q(y|x)) is swapped for another category, drawn from a generator seeded with `seed`, its style
    z kept. 0 when the decoder ignores y; for uint8 images, eval mode."""
    g = torch.Generator().manual_seed(seed)

    def change(x):
        logits, z = encoder.split(x)
        k = logits.shape[1]
        own = logits.argmax(1)
        other = (own + torch.randint(1, k, own.shape, generator=g).to(own.device)) % k  # never its own
        decode = lambda y: decoder(torch.cat([F.one_hot(y, k).to(z.dtype), z], 1))  # noqa: E731
        return (decode(own) - decode(other)).abs().flatten(1).mean(1)

    with evaluating(encoder, decoder):
        return float(batched(change, on_device(images, encoder)).mean())


def representation(trainer, images):
    """dim_reduction's 2-D representation W y + z of uint8 images (eval mode): [N, latent]."""
    enc, dec = trainer.encoder, trainer.decoder
    with evaluating(enc, dec):
        return batched(lambda x: dec.represent(enc(x)), on_device(images, enc))
