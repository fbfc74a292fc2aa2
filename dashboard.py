"""A live TensorBoard view of a training run: `python main.py --tensorboard [DIR]`, then `tensorboard --logdir DIR`.

What a run writes (the step of every tag is the optimiser steps taken, so a resumed run continues its curves):

  loss/<column>            every --tensorboard_every steps: each phase's mean loss over those steps
  epoch/<column>           at the end of each epoch: its row of log.csv (the means, the test figures, and
                           --eval_every's figures on the epochs it evaluates)
  images/samples           the same prior draws decoded each epoch, so the grid shows the model learn
  images/reconstructions   test images (odd rows) above their reconstructions, each epoch
  codes/test, codes/prior  histograms of 1,000 test codes beside 1,000 prior draws, each epoch
  hparams                  the run's settings, once, when the run starts (not again on --resume)

Only rank 0 writes under torchrun, so its loss curves are the means over rank 0's share of each batch.
Resuming purges what an interrupted run wrote after its checkpoint.

    board = Dashboard("runs/tb", trainer, data.test, every=50)
    trainer.fit(data, watch=board)
    board.close()
"""

import math
from dataclasses import asdict

import torch

from data import to_float

INSTALL = "--tensorboard needs the tensorboard package: pip install tensorboard"
SHOWN = 1000  # test codes and prior draws in each histogram
GRID = 64  # prior draws in the sample grid; test images in the reconstruction grid: half of it


def tensorboard():
    """(SummaryWriter, hparams) of torch.utils.tensorboard, imported when first needed: the tensorboard package
    is optional (only --tensorboard needs it). ImportError(INSTALL) without it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams
    except ImportError:
        raise ImportError(INSTALL) from None
    return SummaryWriter, hparams


class Dashboard:
    """Writes a run's curves, pictures and settings to TensorBoard event files in `folder` as it trains.

    Its `step` and `epoch` methods are what Trainer.fit(watch=...) calls; ImportError(INSTALL) when the
    tensorboard package is missing.
    """

    def __init__(self, folder, trainer, test, every=50, seed=0):
        SummaryWriter, hparams = tensorboard()
        self.trainer, self.every = trainer, every
        model = trainer.model
        # a fresh run starts the files; a resumed one drops whatever was written past its checkpoint
        self.writer = SummaryWriter(str(folder), purge_step=trainer.step + 1 if trainer.step else None)
        self.test_images = test.images[: GRID // 2]
        self.test_labels = test.labels[: GRID // 2]
        self.codes_of = test.images[:SHOWN], test.labels[:SHOWN]
        generator = torch.Generator().manual_seed(seed)
        self.noise = model.sample_prior(GRID, generator=generator)
        self.prior = model.sample_prior(SHOWN, generator=generator)
        self.last_sums, self.last_step, self.last_epoch = None, 0, None
        if trainer.epoch == 0 and trainer.step == 0:
            # the settings, linked to the test BCE curve; add_hparams would also write a dummy point of that curve
            for summary in hparams(settings(trainer), {"epoch/test_recon_bce": 0.0}):
                self.writer.file_writer.add_summary(summary)

    def step(self, trainer, sums, steps_in_epoch):
        """After each step: every `every` steps, each column's mean over the steps since the last write."""
        if trainer.step % self.every:
            return
        if self.last_sums is None or trainer.epoch != self.last_epoch:  # a new epoch starts its sums at zero
            self.last_sums, self.last_step, self.last_epoch = torch.zeros_like(sums), 0, trainer.epoch
        means = ((sums - self.last_sums) / (steps_in_epoch - self.last_step)).tolist()
        for column, value in zip(trainer.model.columns, means):
            if column == "recon_loss":
                value *= trainer.model_cfg.image_size  # nats per image, as log.csv gives it
            self.writer.add_scalar(f"loss/{column}", value, trainer.step)
        self.last_sums, self.last_step = sums.clone(), steps_in_epoch

    def epoch(self, trainer):
        """After each epoch: its row of the log, the two grids and the two histograms."""
        model, step = trainer.model, trainer.step
        for column, value in trainer.history[-1].items():
            if column != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"epoch/{column}", value, step)
        samples = model.decode(self.noise)
        self.writer.add_images("images/samples", samples.cpu(), step)
        originals = to_float(self.test_images)
        pairs = torch.stack([originals, model.reconstruct(self.test_images, self.test_labels).cpu()], 1)
        self.writer.add_images("images/reconstructions", pairs.flatten(0, 1), step)
        images, labels = self.codes_of
        self.writer.add_histogram("codes/test", model.encode(images, labels).float().cpu(), step)
        self.writer.add_histogram("codes/prior", self.prior.float().cpu(), step)
        self.writer.flush()

    def close(self):
        self.writer.close()


def settings(trainer):
    """The run's settings as TensorBoard's hparams take them: numbers, strings and booleans."""
    out = {}
    for key, value in {**asdict(trainer.model_cfg), **asdict(trainer.cfg)}.items():
        out[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out
