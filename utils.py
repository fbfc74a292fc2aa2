"""Files and devices: atomic saves, checked loads, the one loader of trained models, the run lock.

    import utils
    model = utils.load_models("weights/aae.pt")         # or the folder "weights"; any model of the paper
    codes = model.encode(images)                        # uint8 [N, 28, 28], or floats in [0, 1]
    images = model.decode(codes)                        # [N, 1, 28, 28] in [0, 1]
    images = model.sample(64)                           # prior draws, decoded
    model.predict_category(images)                      # and each model's own extras

Checkpoints are written atomically (temp file in the same folder, fsync, os.replace), so an
interrupted or failed save never destroys the previous one. A training run holds its --weights
folder with an OS lock (RunLock), which the system releases when the process ends, however it ends.
"""

import csv
import errno
import fcntl
import io
import json
import math
import os
import sys
from pathlib import Path

import torch

import variants
from config import FORMAT_VERSION, model_config_from, train_config_from


CHECKPOINT_NAME = "aae.pt"
LOG_NAME = "log.csv"


class CheckpointError(Exception):
    """A weights file that cannot be used; str(e) is one line that says what to do."""


class SaveError(Exception):
    """A file could not be written; the previous version, if any, is intact."""


def choose_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(name)


# -- writing files atomically ---------------------------------------------------------------------


def rss_mb(field="VmRSS"):
    """This process's resident memory (VmRSS) or its peak so far (VmHWM), in MB (Linux). Not getrusage's
    ru_maxrss: Linux carries that over from the parent through fork and exec."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def peak_memory(device):
    """'peak memory: ...' of this process so far: resident set size, and the CUDA allocator's peak on a GPU."""
    try:
        text = f"peak memory: {rss_mb('VmHWM'):,.0f} MB resident"
    except OSError:  # no /proc: not Linux
        text = "peak memory: resident size not known here"
    if torch.device(device).type == "cuda":
        text += f", {torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MB on the GPU"
    return text


def atomic_write(path, write):
    """Call write(file) on a temp file beside `path`, fsync it, then move it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        interrupt = _interrupt_behind(e)
        if interrupt is not None:  # a second Ctrl-C/SIGTERM inside torch.save, whose cleanup then raised
            raise interrupt from None
        if isinstance(e, OSError):
            reason = "no space left on the device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise SaveError(f"could not write {path}: {reason}; the previous file, if any, is unchanged") from None
        raise
    fsync_folder(path.parent)  # make the rename itself durable


def write_together(files, fsync=True):
    """Write several files so that either all of them appear, whole, or none does.

    files: (path, save) pairs, possibly a generator (so a caller can make each file's contents as it goes);
    save(tmp) writes the file at the path tmp, a hidden name beside `path` that keeps its suffix (savers that
    pick the format from it work). Every file is written (and fsynced) before the first is moved into place.
    fsync=False skips the fsyncs, which cost milliseconds a file: files that can be made again, written by
    the thousand, stay whole if the program fails, but may not survive a power cut.
    """
    moves = []
    try:
        for path, save in files:
            path = Path(path)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
            moves.append((tmp, path))
            save(tmp)
            if fsync:
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
    except BaseException as e:
        for tmp, _ in moves:
            tmp.unlink(missing_ok=True)
        interrupt = _interrupt_behind(e)
        if interrupt is not None:
            raise interrupt from None
        if isinstance(e, OSError):
            reason = "no space left on the device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise SaveError(f"could not write {moves[-1][1] if moves else 'a file'}: {reason}; nothing was "
                            "written") from None
        raise
    for tmp, path in moves:  # renames within one folder: they do not fail for want of space
        os.replace(tmp, path)
    for folder in {path.parent for _, path in moves} if fsync else ():
        fsync_folder(folder)  # make the renames durable
    return [path for _, path in moves]


def fsync_folder(folder):
    """Flush a folder's entries (a rename into it) to disk, where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _interrupt_behind(error):
    """The KeyboardInterrupt that `error` is, or that it was raised while handling; else None."""
    while error is not None:
        if isinstance(error, KeyboardInterrupt):
            return error
        error = error.__context__
    return None


def write_json(values, path):
    """A JSON file of `values`, written atomically."""
    text = json.dumps(values, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def save_checkpoint(state, path):
    atomic_write(path, lambda f: torch.save(state, f))


def write_csv(rows, path):
    """The training history as a CSV, one row per epoch; rewritten whole, atomically."""
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def write(f):
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        f.write(text.getvalue().encode())

    atomic_write(path, write)


def read_csv(path):
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()} for row in csv.DictReader(f)]


def check_writable(folder, flag="--weights"):
    """Create `folder` if needed and prove a file can be written there, before any training."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise SaveError(f"the {flag} folder {folder} is not writable ({e.strerror or e}); choose another with {flag}")


# -- reading checkpoints --------------------------------------------------------------------------

REQUIRED_KEYS = ("format_version", "model_config", "encoder", "decoder", "discriminator")


def checkpoint_path(path):
    """A checkpoint file, given it or the folder that holds it."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def load_checkpoint(path, map_location="cpu"):
    """The checkpoint dict at `path` (file or weights folder), or CheckpointError saying why not."""
    path = checkpoint_path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; train one first (python main.py ...) or pass --weights DIR")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty; it is not a checkpoint (delete it, or retrain)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle garbage, unsafe types: all mean "not ours"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in first:  # torch's long advice, with terminal escapes, is not for this file
            first = "it holds something other than tensors and plain values, which weights_only loading refuses"
        raise CheckpointError(f"{path} is not a readable checkpoint ({first[:120]}); it may be truncated or another "
                              "kind of file") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is a torch file but not an AAE checkpoint written by this program")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {ckpt['format_version']}, this program reads format {FORMAT_VERSION}"
        )
    check_fits(path, ckpt)
    return ckpt


def check_fits(path, ckpt):
    """CheckpointError unless the networks of ckpt's configs have exactly its tensors' names and shapes.

    They are built on the meta device, so a garbled size costs no memory (a real build could ask
    for gigabytes).
    """
    for key in ("model_config", "train_config"):
        if not isinstance(ckpt.get(key, {}), dict):
            raise CheckpointError(f"{path}: its {key} is not a dict; the file is damaged or not from this program")
    try:
        model_cfg, train_cfg = model_config_from(ckpt["model_config"]), train_config_from(ckpt.get("train_config", {}))
        with torch.device("meta"):
            nets = variants.variant_class(model_cfg).networks(model_cfg, train_cfg)
    except Exception as e:  # a size of the wrong type, a negative one, an unknown mode...
        detail = " ".join(str(e).split())[:160]
        raise CheckpointError(f"{path}: its model_config cannot be built ({detail}); the file is damaged or not from "
                              "this program") from None
    for name, net in nets.items():
        want = {k: list(v.shape) for k, v in net.state_dict().items()}
        saved = ckpt.get(name) if isinstance(ckpt.get(name), dict) else {}
        have = {k: list(v.shape) for k, v in saved.items() if isinstance(v, torch.Tensor)}
        if have != want:
            wrong = [f"{k} is {have[k]} in the file, {want[k]} for the saved model_config" for k in want
                     if k in have and have[k] != want[k]]
            missing = [f"no tensor {k}" for k in want if k not in have]
            extra = [f"unexpected {k}" for k in have if k not in want]
            raise CheckpointError(f"{path}: the {name} weights do not fit the saved configuration "
                                  f"({(wrong + missing + extra)[0][:160]})")


def load_models(path, device="cpu"):
    """The trained model of a checkpoint (file or weights folder), whichever of the paper's it is, in eval mode.

    It has encode, decode, sample and sample_prior, its networks (encoder, decoder, ...), its
    configs (model_cfg, train_cfg) and training history, and its own extras (predict_category ...).
    """
    ckpt = load_checkpoint(path, map_location=device)
    model_cfg, train_cfg = model_config_from(ckpt["model_config"]), train_config_from(ckpt.get("train_config", {}))
    try:
        model = variants.build(model_cfg, train_cfg, device)
        for name, net in model.nets.items():
            net.load_state_dict(ckpt[name])  # load_checkpoint has checked that they fit
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        detail = f"missing {e}" if isinstance(e, KeyError) else " ".join(str(e).split())[:160]
        raise CheckpointError(f"{checkpoint_path(path)} holds weights that cannot be loaded ({detail}); the file is "
                              "damaged or from another version") from None
    model.history[:] = list(ckpt.get("history", []))
    return model.eval()


# -- one run per folder ---------------------------------------------------------------------------

LOCK_NAME = ".lock"


class FolderBusy(Exception):
    """Another process is training into the folder; str(e) is one line naming it."""


class RunLock:
    """An exclusive OS lock (flock) on `folder`/.lock while a run trains into the folder.

    The system releases it when the process ends, even by kill -9, so a stale lock cannot block a
    folder. The file holds the holder's process id and command line, for the message a second run
    gets. Reading the folder (draw, evaluate) takes no lock.
    """

    def __init__(self, folder):
        self.path = Path(folder) / LOCK_NAME
        self.file = None

    def acquire(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+")
        self._take(file)
        file.seek(0)
        file.truncate()
        file.write(f"process {os.getpid()} ({' '.join(sys.argv)[:160]})\n")
        file.flush()
        self.file = file
        return self

    def check(self):
        """FolderBusy if a live run holds the folder; creates nothing. A shared lock, taken and let go at once:
        it conflicts only with a holder's exclusive one, not with other processes checking at the same time
        (the ranks of one torchrun launch)."""
        if self.path.exists():
            with open(self.path, "a+") as file:
                self._take(file, fcntl.LOCK_SH)

    def _take(self, file, kind=fcntl.LOCK_EX):
        try:
            fcntl.flock(file, kind | fcntl.LOCK_NB)
        except OSError:
            file.seek(0)
            holder = " ".join(file.read().split()) or "another process"
            file.close()
            raise FolderBusy(f"{self.path.parent} is being trained into by {holder[:200]}; wait for it to finish, "
                             "or train into another --weights folder") from None

    def release(self):
        if self.file is not None:
            self.file.close()  # closing releases the lock
            self.file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
