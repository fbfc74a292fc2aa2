"""Which model of the paper a run trains: the registry from names to variant classes, and the flags each reads.

    import variants
    model = variants.build(ModelConfig(mode="clustering"), TrainConfig(), "cpu", train_labels)
    variants.check_flags(model_cfg, train_cfg, typed={"clusters", "labels"})   # ValueError: one line

A name is what --mode takes; --label_discriminator picks its own (name_of). Adding a model of the
paper is one class (aae.py, conditional.py, categorical.py) and one line in VARIANTS.
"""

import aae
import categorical
import conditional
from config import ModelConfig, TrainConfig

VARIANTS = {
    "unsupervised": aae.AAE,
    "label_discriminator": conditional.LabelDiscriminatorAAE,
    "supervised": conditional.SupervisedAAE,
    "semi_supervised": categorical.SemiSupervisedAAE,
    "clustering": categorical.ClusteringAAE,
    "dim_reduction": categorical.DimReductionAAE,
}
LABEL_DISCRIMINATOR = "label_discriminator"  # chosen by --label_discriminator, which keeps --mode unsupervised
MODES = tuple(name for name in VARIANTS if name != LABEL_DISCRIMINATOR)  # --mode's choices

# The flags that only some models read, each with what a user who typed it may have meant.
OPTIONAL_FLAGS = {
    "prior_std": "it is the standard deviation of --prior gaussian",
    "encoder": "the models with a categorical code have their own encoder",
    "noise_dim": "it is the noise input of --encoder universal",
    "labels": "use --mode semi_supervised, dim_reduction or --label_discriminator to train with some labels",
    "classification_lr": "it is the rate of the cross-entropy phase on labels (semi_supervised, dim_reduction "
                         "with --labels)",
    "balance_weight": "it weighs a term of the categorical code (semi_supervised, clustering, dim_reduction)",
    "confidence_weight": "it weighs a term of the categorical code (semi_supervised, clustering, dim_reduction)",
    "augment": "it shifts the images of the classification and consistency phases (semi_supervised, clustering, "
               "dim_reduction), which a run without labels and with --consistency_weight 0 leaves out",
    "consistency_weight": "it weighs a phase of the categorical code (semi_supervised, clustering, dim_reduction)",
    "consistency_threshold": "it picks the target of the consistency phase, which --consistency_weight 0 leaves out",
    "clusters": "it sizes the categorical code of clustering (and dim_reduction with --labels 0)",
}


def name_of(model_cfg):
    """The registry name of the model a ModelConfig describes (what its checkpoint holds)."""
    return LABEL_DISCRIMINATOR if model_cfg.label_discriminator else model_cfg.mode


def variant_class(model_cfg):
    """The class of the model `model_cfg` describes, or ValueError naming the choices."""
    name = name_of(model_cfg)
    if name not in VARIANTS:
        raise ValueError(f"unknown mode {model_cfg.mode!r}; choose one of: {', '.join(MODES)}")
    return VARIANTS[name]


def check(model_cfg: ModelConfig, train_cfg: TrainConfig):
    """ValueError, in words a user can act on, unless the model can train with these settings."""
    variant_class(model_cfg).check(model_cfg, train_cfg)


def check_flags(model_cfg, train_cfg, typed):
    """ValueError for the first flag in `typed` (names the user gave) that the chosen model does not read."""
    cls = variant_class(model_cfg)
    read = cls.reads(model_cfg, train_cfg)
    for flag in OPTIONAL_FLAGS:
        if flag in typed and flag not in read:
            raise ValueError(f"{cls.title} does not read --{flag}: drop it ({OPTIONAL_FLAGS[flag]})")


def default_dis_lr(model_cfg):
    """--dis_lr when not given: the rate this model was tuned and measured at."""
    return variant_class(model_cfg).dis_lr


def build(model_cfg, train_cfg, device, train_labels=None, cuda_graphs=False):
    """The model the configs describe, its weights drawn from the global torch generator.

    train_labels: the training split's labels, for a model that reads some (it keeps only the
    --labels chosen ones); None to load trained weights into it.
    """
    return variant_class(model_cfg)(model_cfg, train_cfg, device, train_labels, cuda_graphs)
