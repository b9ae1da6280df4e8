"""Run folders: config.json + model.safetensors (+ train_state.pt to resume, + the files a
training stage makes beside them, e.g. the worldmodel's latents.safetensors).

Each weight is in one file: model.safetensors holds what generation needs, train_state.pt
the weights of the modules only training uses (Family.training_only: discriminators, a
live copy beside its EMA) with the optimizer and RNG states. Runs saved before that split
(model.safetensors with every weight, train_state.pt with a second copy) load and resume
as they did.

Every file is written to a temp name beside it and renamed into place, so a crash or a
Ctrl-C never leaves a half-written file; while a save replaces the weights and then
train_state.pt, the weights they replace stay beside them (PREVIOUS), so a kill between
the two still leaves a pair that resumes. train_state.pt is read with
weights_only=True: tensors and plain containers only, never arbitrary pickled code.
Both are written from CPU copies and read onto the CPU, so a run trained on a GPU loads
on a machine without one; load_run then moves the model where it is asked to run."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .devices import to_cpu
from .errors import EverloopError
from .models import build, config_from_dict, config_to_dict
from .outputs import write_file
from .validate import check_run_config

CONFIG, WEIGHTS, TRAIN_STATE = "config.json", "model.safetensors", "train_state.pt"
PREVIOUS = "model.previous.safetensors"
"""The weights of the checkpoint a save replaces (a hard link, not a copy), kept until the
new train_state.pt is in place: a kill between the two writes leaves a pair that resumes."""


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), then rename tmp over path (temps of dead processes beside it
    are cleaned first: outputs.write_file)."""
    write_file(path, write)


def write_folder(run: Path, config: dict, weights: dict, train_state: dict | None = None,
                 extra: dict[str, dict] | None = None) -> None:
    """Any run folder (a family's, the painter's): weights and extra .safetensors files first,
    train_state.pt next, config.json last, so a config.json always describes files that exist."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    # The weights name the step of their train_state.pt: a resume can tell the two files of
    # one checkpoint from a save cut off between them (resume_weights).
    saved_at = {"step": str(train_state["step"])} if train_state is not None and "step" in train_state else None
    if train_state is not None:
        _keep_previous(run)
    write_tensors(run / WEIGHTS, weights, saved_at)
    write_artifacts(run, extra or {})
    if train_state is not None:
        atomic_write(run / TRAIN_STATE, lambda p: torch.save(to_cpu(train_state), p))
        (run / PREVIOUS).unlink(missing_ok=True)
    atomic_write(run / CONFIG, lambda p: p.write_text(json.dumps(config, indent=2)))


def _keep_previous(run: Path) -> None:
    """RUN/PREVIOUS := the weights now on disk, those of the train_state.pt beside them."""
    weights, previous = run / WEIGHTS, run / PREVIOUS
    if not weights.exists():  # a first save: no pair on disk to keep
        previous.unlink(missing_ok=True)
        return

    def link(tmp: Path) -> None:
        try:
            os.link(weights, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(weights, tmp)
    atomic_write(previous, link)


def save_run(run: Path, model, meta: dict, train_state: dict | None = None, cfg=None) -> None:
    """A family's run folder: the weights generation needs to model.safetensors, the
    training-only ones into train_state.pt (dropped when there is no train_state). `cfg`:
    the config to record, if not model.cfg (under torch.distributed a process trains with
    its share of the batch; the run keeps the global one)."""
    config = {"family": model.family, "config": config_to_dict(model.cfg if cfg is None else cfg), **meta}
    only = model.training_only()
    weights, training = {}, {}
    for key, tensor in model.state_dict().items():
        (training if _under(key, only) else weights)[key] = tensor
    if train_state is not None:
        train_state = {**train_state, "training_weights": training}
    write_folder(run, config, weights, train_state)


def _under(key: str, modules) -> bool:
    """Whether state_dict key `key` belongs to one of the child modules `modules`."""
    return key.split(".", 1)[0] in modules


def write_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """One .safetensors file, written from CPU copies; `metadata` goes into its header."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(Path(path), lambda p: save_file(tensors, str(p), metadata=metadata))


def write_artifacts(run: Path, artifacts: dict) -> None:
    """.safetensors files, {file name: {key: tensor}}: what a stage made beside the weights
    (Family.take_artifacts)."""
    for name, tensors in artifacts.items():
        write_tensors(Path(run) / name, tensors)


def read_artifacts(run: Path, names) -> dict:
    """{file name: {key: tensor}} of the artifact files `names` the run folder holds (CPU)."""
    found = {}
    for name in names:
        path = Path(run) / name
        if path.exists():
            found[name] = read_weights(path)
    return found


def read_json_config(run: Path, made_by: str = "a run folder made by `everloop train`") -> dict:
    """RUN/config.json as a dict, unchecked; a missing or broken file is a one-line error."""
    run = Path(run)
    if not run.is_dir():
        raise EverloopError(f"{run}: no such run folder")
    path = run / CONFIG
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EverloopError(f"{path}: missing (is {run} {made_by}?)") from None
    except (ValueError, OSError) as e:  # bad JSON, bad UTF-8, a folder named config.json
        raise EverloopError(f"{path}: not a valid run config ({e})") from None


def read_config(run: Path) -> dict:
    config = read_json_config(run)
    check_run_config(config, Path(run) / CONFIG)  # every field of the right type and in range
    return config


def model_from_config(config: dict, path) -> torch.nn.Module:
    """Build the family's model from a checked config dict; any failure names ``path``."""
    try:
        return build(config["family"], config_from_dict(config["family"], config["config"]))
    except EverloopError as e:
        raise EverloopError(f"{path}: {e}") from None
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:  # a value the family refuses
        raise EverloopError(f"{path}: the config does not make a {config['family']} model "
                            f"({type(e).__name__}: {e})") from None


def load_run(run: Path, device: torch.device | str = "cpu"):
    """Rebuild the model of a run folder on `device`, in eval mode; returns (model, config dict)."""
    run = Path(run)
    config = read_config(run)
    model = model_from_config(config, run / CONFIG)
    dropped = model.drop_training_only()
    # A run saved before the split also holds the training-only weights here: not needed.
    tensors = {k: v for k, v in read_weights(run / WEIGHTS).items() if not _under(k, dropped)}
    load_weights(model, tensors, run / WEIGHTS)
    return model.to(device).eval(), config


def resume_weights(run: Path, state: dict) -> dict:
    """Every weight of a run to resume: model.safetensors plus train_state.pt's training-only
    ones. A train_state.pt saved before the split holds a copy of every weight under "model";
    it wins then, as it did."""
    path, step = Path(run) / WEIGHTS, str(state.get("step"))
    tensors, saved_at = read_weights(path), _saved_at(path)
    if saved_at not in (None, step):  # a save was cut off between its two writes
        previous = Path(run) / PREVIOUS
        if not (previous.exists() and _saved_at(previous) == step):
            raise EverloopError(f"{path} is from step {saved_at}, {Path(run) / TRAIN_STATE} from step "
                                f"{step}, and no {PREVIOUS} of step {step} is beside them; cannot --resume")
        tensors = read_weights(previous)
    return {**tensors, **state.get("training_weights", state.get("model", {}))}


def _saved_at(path: Path) -> str | None:
    """The step a weights file names (write_folder), None for one saved without a train state."""
    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("step")


def read_weights(path: Path) -> dict:
    """The tensors of a .safetensors file, on the CPU; missing or damaged: a one-line error."""
    if not Path(path).exists():
        raise EverloopError(f"{path}: missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise EverloopError(f"{path}: unreadable or truncated weights ({e})") from None


def load_weights(module: torch.nn.Module, tensors: dict, where) -> None:
    """Load every tensor into `module`; any missing or unexpected one is an error naming `where`."""
    missing, unexpected = module.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise EverloopError(f"{where}: weights do not match the config "
                            f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)")


def load_train_state(run: Path) -> dict:
    path = Path(run) / TRAIN_STATE
    if not path.exists():
        raise EverloopError(f"{path}: missing; cannot --resume (train without --resume to start over)")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 (torch raises several types for a damaged file)
        raise EverloopError(f"{path}: unreadable training state ({type(e).__name__})") from None
