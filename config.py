"""The two dataclasses a run is described by, saved in every checkpoint: ModelConfig and TrainConfig.

    from config import ModelConfig, TrainConfig
    model_cfg = ModelConfig(latent_dim=2)             # the networks' sizes, and which model of the paper
    train_cfg = TrainConfig(epochs=10, prior="mixture")

A checkpoint holds asdict() of each; model_config_from and train_config_from rebuild them, ignoring keys
this version does not know. Each default says why where the value is not obvious (docs/defaults.md).
"""

from dataclasses import dataclass, fields

FORMAT_VERSION = 1  # of the checkpoints train.Trainer.state_dict() writes; utils.load_checkpoint reads only it


@dataclass
class ModelConfig:
    # Defaults are the original model-zoo AAE's: 784-1000-1000-8 MLPs with these dropout rates.
    image_shape: tuple = (1, 28, 28)
    latent_dim: int = 8
    hidden_dim: int = 1000
    dropout: float = 0.25  # encoder and decoder
    dis_hidden_dim: int = 1000
    dis_dropout: float = 0.2
    # q(z|x), paper §2.1: "deterministic", "gaussian" (mean and log-variance, reparameterised) or
    # "universal" (noise is an extra input of the encoder).
    encoder: str = "deterministic"
    noise_dim: int = 8  # universal encoder: size of its N(0, I) noise input (the paper leaves it open)
    # Which model of the paper, with label_discriminator: a name of variants.VARIANTS (variants.name_of).
    mode: str = "unsupervised"
    n_classes: int = 10  # labels in the data (digits)
    label_discriminator: bool = False  # §2.3: the discriminator also sees a one-hot label + "unlabelled" slot
    clusters: int = 16  # clustering / dim_reduction: size of the categorical code y (§6, Table 3: 16)

    @property
    def image_size(self) -> int:
        channels, height, width = self.image_shape
        return channels * height * width


@dataclass
class TrainConfig:
    dataset: str = "mnist"
    directory: str = "data"  # where the data was read from; `main.py draw` reads the test split there
    emnist_split: str = "balanced"  # --dataset emnist: which split (torchvision's names); ignored by the others
    epochs: int = 100
    # The paper's batch size. The original used 16, which makes 100 epochs several times slower on a CPU
    # for no gain in quality that we could measure.
    batch_size: int = 100
    gen_lr: float = 6e-4  # reconstruction phase: Adam on encoder + decoder (the original's value)
    # Discriminator phase, and the encoder's generator phase; each variant's `dis_lr` when not given. At the
    # original's 8e-4 the plain AAE's discriminator died on Fashion-MNIST in earlier runs (its ReLUs dead, every
    # code given the same logit); 2e-4 kept it alive (docs/defaults.md).
    dis_lr: float = 2e-4
    adam_beta1: float = 0.5  # docs/defaults.md: at 0.9 the adversarial phases swing harder
    prior: str = "gaussian"
    prior_std: float = 5.0  # the original's `randn * 5`
    seed: int = 0
    precision: str = "fp32"  # or "bf16": autocast of the forward passes
    # Labelled training examples for the models that read labels: N, chosen balanced from the seed
    # (N / n_classes a class), or -1 for all. Table 2 of the paper uses 100, 1000 and all.
    labels: int = -1
    # Adam learning rate of the cross-entropy phase on labelled batches. At gen_lr it lost to the
    # category's generator phase (test error stuck near 80% on 2,000 mnist-sample digits, 500 labels,
    # 2 epochs); 3e-3 gave 15% there, and 1e-2 no better.
    classification_lr: float = 3e-3
    # The categorical models' balance and confidence terms (ours, phases.category_generator_phase): log K minus
    # the entropy of the batch's mean q(y|x), which keeps a batch spread over the categories, and the mean
    # entropy of q(y|x), which makes each image sure of its own. IMSAT's weights (Hu et al. 2017: the
    # marginal entropy 4 times the conditional one, the sum a tenth of the consistency term). With the
    # consistency phase below, on one GPU, mnist-sample, 100 epochs, seeds 0-2 (docs/experiments.md):
    # clustering (16) 29.9 +- 1.1 % test error, against 33.6 +- 2.8 % at the earlier 1.0 and 1.0 without it.
    balance_weight: float = 0.4
    confidence_weight: float = 0.1
    # "cosine": every Adam learning rate follows a half cosine over the run, from its value in the first
    # epoch to near zero in the last (set once an epoch, from the epochs completed). "none": constant.
    lr_decay: str = "none"
    # The categorical models' augmentation (ours, not the paper's): each image the classification and consistency
    # phases read is shifted by up to this many pixels each way, a fresh shift every step. 0: none.
    augment: int = 2
    # Weight of their consistency phase (ours): q(y|x) of a shifted view is pulled towards q(y|x) of the image,
    # as in IMSAT and the Pi-model (Laine & Aila 2017). 0: no such phase. Semi-supervised, 100 labels, with
    # the weights above: 9.8 +- 1.7 % test error (100 epochs, seeds 0-2), the labels alone 24.3 +- 2.1 %.
    consistency_weight: float = 1.0
    # 0: the consistency phase's target is the soft q(y|x). Above 0: the one-hot of its argmax, for the images
    # surer than this and no others (pseudo-labels, as in FixMatch, Sohn et al. 2020). At 0.95 with 100
    # labels: 9.8 +- 3.1 %, no better than soft targets; with 1000 labels: 4.6 +- 0.9 %.
    consistency_threshold: float = 0.0
    # --dataset folder without DIR/train and DIR/test: the share of its images held out as the test split,
    # drawn by `seed`; saved so that `draw` and `evaluate` read the same test images again.
    test_fraction: float = 0.1

# What a checkpoint written before a TrainConfig field existed trained with, where the field's default
# differs: such a checkpoint resumes (and reports) as it was trained.
UNSAVED_VALUES = {"confidence_weight": 0.0, "augment": 0, "consistency_weight": 0.0}
def train_config_from(saved):
    """TrainConfig from a checkpoint's dict, ignoring keys this version does not know; fields it lacks take
    UNSAVED_VALUES (what it was trained with) or their default."""
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{**UNSAVED_VALUES, **{k: v for k, v in saved.items() if k in names}})


def model_config_from(saved):
    """ModelConfig from a checkpoint's dict, ignoring keys this version does not know."""
    names = {f.name for f in fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in saved.items() if k in names})
