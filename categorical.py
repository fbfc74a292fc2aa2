"""The paper's models with a categorical code (Makhzani et al. 2016, §§5-7), as variants (see aae.py).

The encoder gives a category y (against a categorical prior) and a style z (against the --prior),
each with its own discriminator:

  SemiSupervisedAAE  §5, Table 2: plus a cross-entropy phase on the labelled subset (--labels N).
  ClusteringAAE      §6, Table 3: --clusters categories and no labels at all.
  DimReductionAAE    §7: the decoder reads the representation W y + z: learned cluster heads W plus
                     the style; with --labels it is semi-supervised, with --labels 0 it clusters.

Ours, not the paper's: --augment and --consistency_weight (the category phases read shifted views, and
a consistency phase asks a view for the image's category: phases.consistency_phase); y is the one-hot of q(y|x)'s argmax with the softmax's gradient
(models.CategoricalEncoder), y's generator phase also spreads each batch over the categories and
makes each image sure of its own (phases.category_generator_phase), and z's discriminator sees [z, y].

    from categorical import ClusteringAAE
    model = ClusteringAAE(ModelConfig(clusters=16), TrainConfig(), "cpu")
    model.predict_category(images)        # [N] argmax_k q(y = k | x)
"""

import torch

import baselines
import metrics
import plots
import priors
from aae import Variant, batched, evaluating, select_labels
from conditional import style_picture, style_sources
from data import to_float, translate
from models import CategoricalEncoder, Decoder, Discriminator, HeadsDecoder, build_plain, one_hot
from phases import (category_generator_phase, classification_phase, cluster_head_phase, consistency_phase,
                    discriminator_phase, generator_phase, reconstruction_phase)

# dim_reduction: cluster heads are pushed at least this many style-prior stds apart (the paper's
# threshold; the value is ours), so the style blobs around them (~3 std radius) barely overlap.
HEAD_MARGIN = 6.0
# The paper's figures on full MNIST, by (mode, labelled examples or categories).
PAPER = {("semi_supervised", 100): "1.90 ± 0.10 % (Table 2, 100 labels)",
         ("semi_supervised", 1000): "1.60 ± 0.08 % (Table 2, 1000 labels)",
         ("semi_supervised", 60000): "0.85 ± 0.02 % (Table 2, all labels)",
         ("clustering", 16): "9.55 ± 2.05 % (Table 3, 16 clusters)",
         ("clustering", 30): "4.10 ± 1.13 % (Table 3, 30 clusters)"}


class CategoricalAAE(Variant):
    """What §§5-7 share: the two adversarial networks, the categorical prior, their numbers and pictures."""

    flags = ("prior_std", "balance_weight", "confidence_weight", "augment", "consistency_weight",
             "consistency_threshold")
    picture_names = ("mode", "samples", "reconstructions", "losses")
    has_baselines = True
    predicts_category = True
    hard_category = True  # the decoder reads the one-hot y (models.CategoricalEncoder)

    def __init__(self, model_cfg, train_cfg, device, labels=None, cuda_graphs=False):
        super().__init__(model_cfg, train_cfg, device, labels, cuda_graphs)
        c = train_cfg
        self.n_categories = self.categories(model_cfg, train_cfg)
        enc = self.encoder
        self.optimizers = {
            "reconstruction": self._adam([*enc.parameters(), *self.decoder.parameters()], c.gen_lr),
            "discriminator": self._adam(self.discriminator.parameters(), c.dis_lr),
            "generator": self._adam(enc.parameters(), c.dis_lr),
            "discriminator_y": self._adam(self.nets["discriminator_y"].parameters(), c.dis_lr),
            "generator_y": self._adam(enc.parameters(), c.dis_lr),
        }
        self.columns = Variant.columns + ("disc_y_loss", "gen_y_loss", "disc_y_accuracy")
        if self.reads_labels():
            self.optimizers["classification"] = self._adam(enc.parameters(), c.classification_lr)
            self.columns += ("classification_loss",)
        if c.consistency_weight > 0:
            self.optimizers["consistency"] = self._adam(enc.parameters(), c.gen_lr)
            self.columns += ("consistency_loss",)
        self.labelled = None  # the labelled images and their labels on the device: prepare()

    @classmethod
    def check(cls, model_cfg, train_cfg):
        super().check(model_cfg, train_cfg)
        if model_cfg.encoder != "deterministic":
            raise ValueError(f"--mode {model_cfg.mode} has its own encoder (category and style heads); drop "
                             f"--encoder {model_cfg.encoder}")
        if cls.categories(model_cfg, train_cfg) < 2:
            raise ValueError(f"--clusters {model_cfg.clusters} puts every image in one cluster: use 2 or more")
        half = min(model_cfg.image_shape[1:]) // 2
        if half <= 1 and train_cfg.augment:
            raise ValueError(f"images of {model_cfg.image_shape[1]}x{model_cfg.image_shape[2]} are too small to shift: "
                             "pass --augment 0")
        if not 0 <= train_cfg.augment < half:
            raise ValueError(f"--augment {train_cfg.augment} shifts the images out of view: use 0 to {half - 1} pixels")

    @classmethod
    def reads(cls, model_cfg, train_cfg):
        read = super().reads(model_cfg, train_cfg)
        if train_cfg.consistency_weight == 0:
            read.discard("consistency_threshold")
            # no phase left that reads shifted images: a shift would do nothing (0, as the paper's loss is
            # spelled for every model, is accepted)
            if not cls.reads_labels_with(model_cfg, train_cfg) and train_cfg.augment:
                read.discard("augment")
        return read

    @classmethod
    def networks(cls, model_cfg, train_cfg):
        m, k = model_cfg, cls.categories(model_cfg, train_cfg)
        # The weights are drawn after a plain AAE's of the same sizes, which are thrown away: so they were
        # drawn when these models were added, and seeded runs keep their numbers (tests/test_variants.py).
        build_plain(m)
        return {"encoder": CategoricalEncoder(m, k, hard=cls.hard_category),
                "decoder": cls.build_decoder(m, train_cfg, k),
                "discriminator": Discriminator(m, m.latent_dim + k),  # reads [z, y]
                "discriminator_y": Discriminator(m, k)}

    @classmethod
    def categories(cls, model_cfg, train_cfg):
        """Size of the categorical code y: one per class when labels train it, else --clusters."""
        return model_cfg.n_classes if cls.reads_labels_with(model_cfg, train_cfg) else model_cfg.clusters

    @classmethod
    def build_decoder(cls, model_cfg, train_cfg, k):
        return Decoder(model_cfg, k + model_cfg.latent_dim)  # reads [y, z]

    # -- training ------------------------------------------------------------------------------------

    def prepare(self, data):
        if self.reads_labels():
            where = (self.labels >= 0).nonzero().flatten()
            self.labelled = (data.train.images[where.cpu()].to(self.device), self.labels[where])

    def draw(self, rows):
        """Style and category prior draws; with labels, which labelled images make this step's labelled batch."""
        n = len(rows)
        draws = {"z": self.sample_style(n),
                 "y": priors.categorical(n, self.n_categories, generator=self.prior_rng, device=self.device)}
        if self.reads_labels():
            count = int((self.labels >= 0).sum()) if self.labelled is None else len(self.labelled[1])
            pick = torch.randint(count, (min(self.train_cfg.batch_size, count),), generator=self.label_rng)
            draws["pick"] = pick.to(self.device)
        s = self.train_cfg.augment
        if s:  # the shifts of the views the category phases read (none drawn without --augment: seeded runs keep)
            shift = lambda m: torch.randint(-s, s + 1, (m, 2), generator=self.prior_rng, device=self.device)  # noqa: E731
            draws["shift"] = shift(n)
            if self.reads_labels():
                draws["label_shift"] = shift(len(draws["pick"]))
        return draws

    def view(self, x, draws, key):
        """x as a category phase reads it: shifted by draws[key] under --augment, else x itself."""
        return translate(x, draws[key], self.train_cfg.augment) if self.train_cfg.augment else x

    def step(self, x, rows, draws, sums):
        """Reconstruction; each adversarial network's discriminator and generator phases (style z against the
        --prior, category y against Cat(K)); cross-entropy on a labelled batch; consistency between x and a
        shifted view (--consistency_weight); the cluster heads' phase (DimReductionAAE)."""
        enc, opt, ac, c = self.encoder, self.optimizers, self.autocast, self.train_cfg
        sums[0] += reconstruction_phase(enc, self.decoder, opt["reconstruction"], x, ac)
        # The style discriminator sees [z, y] against [prior z, prior y] drawn independently: each category's
        # styles must look like the prior, so the style cannot say the category.
        style, z_prior = enc.style_and_category, torch.cat([draws["z"], draws["y"]], 1)
        d_loss, d_acc = discriminator_phase(style, self.discriminator, opt["discriminator"], x, z_prior, ac)
        dy_loss, dy_acc = discriminator_phase(enc.one_hot, self.nets["discriminator_y"], opt["discriminator_y"], x,
                                              draws["y"], ac)
        sums[1] += d_loss
        sums[3] += d_acc
        sums[2] += generator_phase(style, self.discriminator, opt["generator"], x, ac)
        sums[4] += dy_loss
        sums[5] += category_generator_phase(enc, self.nets["discriminator_y"], opt["generator_y"], x, ac,
                                            c.balance_weight, c.confidence_weight)
        sums[6] += dy_acc
        column = 7
        if self.reads_labels():
            images, labels = self.labelled
            pick = draws["pick"]
            labelled = self.view(to_float(images[pick]), draws, "label_shift")
            sums[column] += classification_phase(enc, opt["classification"], labelled, labels[pick], ac)
            column += 1
        if c.consistency_weight > 0:
            sums[column] += consistency_phase(enc, opt["consistency"], x, self.view(x, draws, "shift"),
                                              c.consistency_weight, ac, c.consistency_threshold)

    def sample_prior(self, n, generator=None, category=None):
        return self.one_hot_prior(n, self.n_categories, generator, category)

    def classes(self):
        return self.n_categories, "class" if self.reads_labels() else "cluster"

    @property
    def grid_columns(self):
        return self.n_categories

    # -- using the trained model ---------------------------------------------------------------------

    def style(self, images):
        """The style codes z of images (eval mode): [N, latent]."""
        with evaluating(self.encoder):
            return batched(self.encoder.style, images.to(self.device))

    def category_probabilities(self, images):
        """q(y|x) of images (uint8 [N, H, W] or floats in [0, 1]): [N, K]."""
        with evaluating(self.encoder):
            return batched(self.encoder.category, images.to(self.device))

    def predict_category(self, images):
        """argmax_k q(y = k | x) of images (uint8 [N, H, W] or floats in [0, 1]): [N] long."""
        with evaluating(self.encoder):
            return batched(lambda x: self.encoder.split(x)[0].argmax(1), images.to(self.device))

    def category_effect(self, images, seed=0):
        """How much the decoder reads the category: the mean absolute pixel change when each image's one-hot y
        (argmax q(y|x)) is swapped for another, drawn from a generator seeded with `seed`, its style z kept.
        0 when the decoder ignores y."""
        g = torch.Generator().manual_seed(seed)
        encoder, decoder = self.encoder, self.decoder

        def change(x):
            logits, z = encoder.split(x)
            k = logits.shape[1]
            own = logits.argmax(1)
            other = (own + torch.randint(1, k, own.shape, generator=g).to(own.device)) % k  # never its own
            decode = lambda y: decoder(torch.cat([one_hot(y, k, z.dtype), z], 1))  # noqa: E731
            return (decode(own) - decode(other)).abs().flatten(1).mean(1)

        with evaluating(encoder, decoder):
            return float(batched(change, images.to(self.device)).mean())

    # -- numbers and pictures ------------------------------------------------------------------------

    def epoch_numbers(self, test):
        out = super().epoch_numbers(test)
        if self.reads_labels():
            out["test_error"] = classification_error(self.predict_category(test.images), test.labels)
        return out

    def numbers(self, data):
        train, test = data.train, data.test
        out = super().numbers(data)
        test_pred = self.predict_category(test.images)
        if self.reads_labels():  # §5, Table 2
            out["test_error"] = classification_error(test_pred, test.labels)
        else:  # §6, Table 3: each cluster takes the majority label of its training members
            train_pred = self.predict_category(train.images)
            out["test_cluster_error"] = 1 - metrics.cluster_accuracy(test_pred, test.labels, train_pred, train.labels)
            # the paper's labelling: each cluster takes the label of the training image surest of it
            train_probs = self.category_probabilities(train.images)
            out["test_cluster_error_exemplar"] = 1 - metrics.exemplar_cluster_accuracy(test_pred, test.labels,
                                                                                       train_probs, train.labels)
            out["clusters_used"] = int(test_pred.unique().numel())
        # does the style code still say the class? near 1 / n_classes means no (§5)
        out["style_knn_accuracy"] = metrics.knn_accuracy(self.style(train.images), train.labels,
                                                         self.style(test.images), test.labels)
        out["category_effect"] = self.category_effect(test.images, seed=self.train_cfg.seed)
        return out

    def baselines(self, data, reference=None):
        """With labels (§5), the same encoder network trained on the same labelled images alone; without (§6),
        k-means with as many clusters on the raw pixels, and on the codes of `reference` (a plain AAE) if given."""
        train, test, t = data.train, data.test, self.train_cfg
        if self.reads_labels():  # the labels it was trained with, chosen again as training chose them
            chosen = select_labels(train.labels, t.labels, self.model_cfg.n_classes, t.seed)
            return {"labels_alone_error": baselines.labels_alone_error(data, chosen, self.model_cfg, seed=t.seed)}
        k = self.n_categories
        out = {"kmeans_pixels_error": baselines.kmeans_error(baselines.pixels(train.images), train.labels,
                                                             baselines.pixels(test.images), test.labels, k,
                                                             seed=t.seed)}
        if reference is not None:
            out["kmeans_codes_error"] = baselines.kmeans_error(reference.encode(train.images).cpu(), train.labels,
                                                               reference.encode(test.images).cpu(), test.labels, k,
                                                               seed=t.seed)
        return out

    def reads_reference(self):
        """Whether baselines() reads a reference model's codes (the clustering ones do)."""
        return not self.reads_labels()

    def settings(self, data):
        return {**super().settings(data), "categories": self.n_categories}

    def paper_figure(self, settings):
        key = settings["categories"] if settings["mode"] == "clustering" else settings["labelled_examples"]
        return PAPER.get((settings["mode"], key))

    def draw_samples(self, path, seed=0):
        return plots.save_grid(self.sample(10 * self.n_categories, seed=seed), path, nrow=self.n_categories)

    def cluster_picture(self, data, path):
        """§6: row k is cluster k's head (decoded with zero style), then test images of the cluster."""
        k, m = self.n_categories, self.model_cfg
        heads = self.decode(torch.cat([torch.eye(k), torch.zeros(k, m.latent_dim)], 1))
        pred = self.predict_category(data.test.images).cpu()
        members = [to_float(data.test.images[pred == c][:10]) for c in range(k)]
        return plots.cluster_grid(heads.cpu(), members, path)


class SemiSupervisedAAE(CategoricalAAE):
    """§5, Table 2: y is the class, trained by the adversarial phases and by cross-entropy on N labels."""

    title = "the semi-supervised AAE (--mode semi_supervised)"
    flags = CategoricalAAE.flags + ("labels", "classification_lr")

    @classmethod
    def check(cls, model_cfg, train_cfg):
        super().check(model_cfg, train_cfg)
        if train_cfg.labels == 0:
            raise ValueError("--mode semi_supervised with --labels 0 has no labels: use --mode clustering")

    @classmethod
    def reads_labels_with(cls, model_cfg, train_cfg):
        return True

    def own_pictures(self, data, folder):
        """Fig. 7 for §5: row i is test image i's style decoded with every class."""
        sources, _ = style_sources(data.test, self.model_cfg.n_classes)
        return [style_picture(self, sources, self.style(sources), folder / "semi_supervised_styles.png")]


class ClusteringAAE(CategoricalAAE):
    """§6, Table 3: y is one of --clusters clusters, found without any label."""

    title = "the clustering AAE (--mode clustering)"
    flags = CategoricalAAE.flags + ("clusters",)

    @classmethod
    def check(cls, model_cfg, train_cfg):
        super().check(model_cfg, train_cfg)
        if train_cfg.labels > 0:
            raise ValueError("--mode clustering reads no labels: drop --labels (semi_supervised reads them)")

    def own_pictures(self, data, folder):
        return [self.cluster_picture(data, folder / "clustering_clusters.png")]


class DimReductionAAE(CategoricalAAE):
    """§7: the decoder reads W y + z, a 2-D representation where W's rows are learned cluster heads.

    The heads are pushed HEAD_MARGIN style-prior stds apart by their own phase. The decoder reads the
    softmax q(y|x), not the one-hot: with a one-hot the 2-D map was a few blobs (models.CategoricalEncoder).
    """

    title = "the dimensionality-reduction AAE (--mode dim_reduction)"
    flags = CategoricalAAE.flags + ("labels", "classification_lr", "clusters")
    hard_category = False

    def __init__(self, model_cfg, train_cfg, device, labels=None, cuda_graphs=False):
        super().__init__(model_cfg, train_cfg, device, labels, cuda_graphs)
        self.optimizers["cluster_heads"] = self._adam([self.decoder.heads], train_cfg.gen_lr)
        self.columns += ("cluster_head_loss",)

    @classmethod
    def reads_labels_with(cls, model_cfg, train_cfg):
        return train_cfg.labels != 0

    @classmethod
    def reads(cls, model_cfg, train_cfg):
        read = super().reads(model_cfg, train_cfg)
        read.discard("clusters" if cls.reads_labels_with(model_cfg, train_cfg) else "classification_lr")
        return read

    @classmethod
    def build_decoder(cls, model_cfg, train_cfg, k):
        # W is in units of the style prior's mean std, saved with the weights
        params = priors.parameters(train_cfg.prior, train_cfg.prior_std)
        with torch.device("cpu"):  # a number, also when the networks are built on the meta device
            scale = float(priors.describe(train_cfg.prior, model_cfg.latent_dim, **params)["std"].mean())
        return HeadsDecoder(model_cfg, k, scale, HEAD_MARGIN)

    def step(self, x, rows, draws, sums):
        super().step(x, rows, draws, sums)
        sums[len(self.columns) - 1] += cluster_head_phase(self.decoder, self.optimizers["cluster_heads"], HEAD_MARGIN)

    def representation(self, images):
        """The 2-D representation W y + z of images (eval mode): [N, latent]."""
        with evaluating(self.encoder, self.decoder):
            return batched(lambda x: self.decoder.represent(self.encoder(x)), images.to(self.device))

    def numbers(self, data):
        out = super().numbers(data)
        train, test = data.train, data.test
        out["knn_accuracy_2d"] = metrics.knn_accuracy(self.representation(train.images), train.labels,
                                                      self.representation(test.images), test.labels)
        return out

    def own_pictures(self, data, folder):
        written = [] if self.reads_labels() else [self.cluster_picture(data, folder / "dim_reduction_clusters.png")]
        heads = (self.decoder.head_scale * self.decoder.heads).detach().cpu()
        written.append(plots.scatter(self.representation(data.test.images).cpu(), data.test.labels,
                                     folder / "dim_reduction_codes.png", "2-D representation W y + z (test)",
                                     heads=heads))
        return written


def classification_error(predicted, labels):
    return float((predicted.cpu() != labels.cpu()).double().mean())
