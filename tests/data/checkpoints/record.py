"""Written and run at commit 9f2ec64 (before the variants refactor), from that checkout: python record.py OUT.

Checksums of the weights after 2 tiny epochs for every model, and 1-epoch checkpoints of each kind (hidden 16)
with the checksum of resuming each to 2 epochs. tests/test_variants.py holds today's code to these figures."""
import hashlib, json, sys, io
from dataclasses import replace
from pathlib import Path
import torch
sys.path.insert(0, "/work/base")
torch.set_num_threads(1)
import data, modes, utils
from models import ModelConfig
from train import TrainConfig

out = Path(sys.argv[1]); tmp = Path("/tmp/rec_idx")
data.write_synthetic_idx(tmp, n_train=200, n_test=100, seed=0)
ds = data.load_dataset("mnist", tmp, download=False)
CASES = {
    "unsupervised": ({}, {}),
    "supervised": ({"mode": "supervised"}, {}),
    "semi_supervised": ({"mode": "semi_supervised"}, {"labels": 20}),
    "clustering": ({"mode": "clustering", "clusters": 12}, {}),
    "dim_reduction": ({"mode": "dim_reduction"}, {"labels": 20}),
    "dim_reduction_unlabelled": ({"mode": "dim_reduction", "clusters": 12}, {"labels": 0}),
    "label_discriminator": ({"label_discriminator": True}, {"prior": "mixture", "labels": 50}),
    "gaussian_encoder_uniform": ({"encoder": "gaussian"}, {"prior": "uniform"}),
    "universal_encoder": ({"encoder": "universal", "noise_dim": 4}, {}),
}
def checksum(state):
    h = hashlib.sha256()
    for net in ("encoder", "decoder", "discriminator", "discriminator_y"):
        for k, v in state.get(net, {}).items():
            h.update(f"{net}.{k}".encode()); h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
sums = {}
for name, (m, t) in CASES.items():
    for hidden in (32, 16):
        mc = ModelConfig(latent_dim=2, hidden_dim=hidden, dis_hidden_dim=hidden, **m)
        dis = 8e-4 if name not in ("unsupervised", "gaussian_encoder_uniform", "universal_encoder") else 2e-4
        tc = TrainConfig(epochs=2, batch_size=50, seed=0, dis_lr=dis, **t)
        tr = modes.make_trainer(mc, tc, "cpu", ds.train.labels)
        if hidden == 32:
            tr.fit(ds, log=lambda l: None)
            sums[name] = checksum(tr.state_dict())
        else:  # fixture: 1 epoch of a 2-epoch run, then what resuming it to 2 epochs gives
            tr.cfg = replace(tc, epochs=1); tr.fit(ds, log=lambda l: None)
            st = tr.state_dict(); st["train_config"]["epochs"] = 2
            utils.save_checkpoint(st, out / f"{name}.pt")
            ck = utils.load_checkpoint(out / f"{name}.pt")
            tr2 = modes.make_trainer(mc, tc, "cpu", ds.train.labels); tr2.load_state_dict(ck); tr2.fit(ds, log=lambda l: None)
            sums[name + "_resumed"] = checksum(tr2.state_dict())
    print(name, sums[name][:16], sums[name + "_resumed"][:16], flush=True)
(out / "checksums.json").write_text(json.dumps(sums, indent=1) + "\n")
