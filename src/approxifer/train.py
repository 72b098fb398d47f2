"""Train the base models: one readable script, top to bottom (setup, recipe, data, evaluation, training, main).

Recipe: SGD with Nesterov momentum, a one-cycle learning rate (linear warm-up then linear decay to zero), optionally
followed by a second, lower cycle (a warm restart) and a phase at a constant rate whose weights are averaged (SWA,
with BatchNorm statistics recomputed), label smoothing, weight decay; random crop (+ horizontal flip where
the dataset allows it) as batched tensor ops. The forward/backward pass runs in channels-last memory, under bf16
autocast where the hardware has bf16 kernels (CUDA; CPUs with AVX-512 or AMX), else in float32
(`inference.native_bf16`).

Resumable at any step: the data order and the augmentation of every batch are functions of (seed, epoch, step),
and a checkpoint (safetensors + JSON, no pickle) is written every `ckpt_every` steps and at each epoch's end, so an
interrupted run continues exactly where it stopped and ends with the same weights as an uninterrupted one.
A recipe with a restart (or an SWA phase) can also start it from the shipped model it follows (`--warm-start`), so
cycles chain.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn
from tqdm import tqdm

from approxifer import data, models
from approxifer.inference import autocast, native_bf16, pick_device, predict
from approxifer.models import seed_variant

__all__ = ["RECIPES", "Recipe", "evaluate", "fit", "recipe_for", "seed_variant", "train"]


# ---------------------------------------------------------------- setup


def checkpoint_dir() -> Path:
    """``$APPROXIFER_CHECKPOINTS``, else ``~/.cache/approxifer/checkpoints`` (outside the work tree)."""
    default = Path.home() / ".cache" / "approxifer" / "checkpoints"
    return Path(os.environ.get("APPROXIFER_CHECKPOINTS", default))


# ---------------------------------------------------------------- recipe


@dataclass(frozen=True)
class Recipe:
    epochs: int
    batch_size: int = 256
    lr: float = 0.1  # peak learning rate of the one-cycle schedule
    warmup: float = 0.2  # fraction of all steps spent warming up from lr/10
    momentum: float = 0.9  # Nesterov
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    crop_pad: int = 4  # random crop after zero-padding by this many pixels (0: none)
    flip: bool = True  # random horizontal flips
    seed: int = 0
    ckpt_every: int = 100  # steps between checkpoints
    restart_epochs: int = 0  # a second one-cycle (warm restart) of this many epochs after the first (0: none)
    restart_lr: float = 0.05  # its peak learning rate
    swa_epochs: int = 0  # then this many epochs at the constant rate `swa_lr`, averaging the weights (0: none)
    swa_lr: float = 0.02
    swa_every: int = 49  # steps between the snapshots averaged (and after the last step)

    @property
    def cycle_epochs(self) -> int:
        return self.epochs + self.restart_epochs

    @property
    def total_epochs(self) -> int:
        return self.cycle_epochs + self.swa_epochs


RECIPES: dict[tuple[str, str], Recipe] = {
    ("mnist", "resnet18"): Recipe(epochs=2, crop_pad=2, flip=False),
    ("mnist", "resnet34"): Recipe(epochs=2, crop_pad=2, flip=False),
    ("mnist", "lenet5"): Recipe(epochs=12, batch_size=128, lr=0.05, crop_pad=2, flip=False, label_smoothing=0.0),
    ("mnist", "mlp"): Recipe(epochs=20, batch_size=128, lr=0.05, crop_pad=0, flip=False, label_smoothing=0.0),
    ("fashion-mnist", "resnet18"): Recipe(epochs=8, crop_pad=2),
    ("fashion-mnist", "lenet5"): Recipe(epochs=12, batch_size=128, lr=0.05, crop_pad=2, label_smoothing=0.0),
    ("fashion-mnist", "mlp"): Recipe(epochs=20, batch_size=128, lr=0.05, crop_pad=0, label_smoothing=0.0),
    # 18 epochs gave 0.923; a 12-epoch restart from it at half the peak (MobileNetV2's) 0.933 (fp32 here: 8-10 s a
    # step, 7.6 h for both cycles). Earlier restarts fell short: 8 epochs at 0.03, 0.9285 (weights lost); 3 at 0.02,
    # 0.9257; 4 more at 0.02 from that, 0.9237; an SWA phase from it (--swa-epochs 4 --swa-lr 0.02, 16 snapshots
    # averaged), 0.9261
    ("cifar10", "resnet18"): Recipe(epochs=18, restart_epochs=12, restart_lr=0.05),
    ("cifar10", "resnet34"): Recipe(epochs=24),  # 2.2x ResNet-18's cost per step: 4.8 s a step, 6.7 h (card)
    ("cifar10", "vgg16"): Recipe(epochs=30),  # half ResNet-18's cost per step: more epochs in the same time
    # depthwise convolutions are slow on CPU: 2.2 s a step (bf16); 22 epochs gave 0.913, a 12-epoch warm restart 0.922
    ("cifar10", "mobilenetv2"): Recipe(epochs=22, restart_epochs=12, restart_lr=0.05),
}


def recipe_for(dataset: str, arch: str, **overrides) -> Recipe:
    """The recipe for a (dataset, arch), with keyword overrides (e.g. epochs=1)."""
    data.info(dataset)
    if arch not in models.ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(models.ARCHS)}")
    base = RECIPES.get((dataset, arch), Recipe(epochs=10, flip=dataset != "mnist"))
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def learning_rate(r: Recipe, step: int, steps_per_epoch: int) -> float:
    """One cycle: linear from lr/10 to lr over the warm-up, then linear to 0; the restart repeats it with peak
    `restart_lr` over its own epochs; the SWA phase after them runs at `swa_lr`."""
    first = r.epochs * steps_per_epoch
    if step >= r.cycle_epochs * steps_per_epoch and r.swa_epochs:
        return r.swa_lr
    if step < first:
        lr, total = r.lr, first
    else:
        lr, total, step = r.restart_lr, r.restart_epochs * steps_per_epoch, step - first
    peak = max(1, round(r.warmup * total))
    if step < peak:
        return lr * (0.1 + 0.9 * step / peak)
    return lr * max(0.0, (total - step) / max(1, total - peak))


def swa_snapshot_due(r: Recipe, step: int, steps_per_epoch: int) -> bool:
    """Whether the weights after global step `step` join the SWA average: every `swa_every` steps of the SWA phase,
    and after its last step. The average is SWA's (Izmailov et al., 2018): w_swa = (1/n) sum_i w_i."""
    into = step - r.cycle_epochs * steps_per_epoch
    return r.swa_epochs > 0 and into > 0 and (into % r.swa_every == 0 or step == r.total_epochs * steps_per_epoch)


# ---------------------------------------------------------------- data


def augment(x: torch.Tensor, r: Recipe, gen: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding) and optional horizontal flip of an NCHW batch, drawn from `gen`."""
    n, c, h, w = x.shape
    if r.crop_pad:
        p = r.crop_pad
        dy, dx = torch.randint(0, 2 * p + 1, (2, n), generator=gen)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
        x = F.pad(x, (p, p, p, p))[
            torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols
        ]
    if r.flip:
        mask = torch.rand(n, generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def _generator(*seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(seed)).generate_state(1)[0]))


# ---------------------------------------------------------------- evaluation


def evaluate(model: nn.Module, dataset: str, device: torch.device, *, bf16: bool = False, n: int | None = None):
    """Test accuracy (a fraction) on the first `n` (default: all) test images."""
    x, y = data.load(dataset, "test")
    x, y = x[:n], y[:n]
    logits = predict(model, data.to_tensor(x, dataset), device, bf16=bf16)
    return float((logits.argmax(1).numpy() == y).mean())


# ---------------------------------------------------------------- training


def _save_checkpoint(
    path: Path, model: nn.Module, opt: torch.optim.Optimizer, state: dict, averaged: AveragedModel | None = None
) -> None:
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if averaged is not None:
        tensors |= {f"swa.{k}": v.detach().contiguous().cpu() for k, v in averaged.state_dict().items()}
    for i, p in enumerate(opt.param_groups[0]["params"]):
        buf = opt.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            tensors[f"momentum.{i}"] = buf.detach().contiguous().cpu()
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, path / "state.tmp")
    (path / "state.json.tmp").write_text(json.dumps(state, indent=1))
    os.replace(path / "state.tmp", path / "state.safetensors")  # weights first, then the JSON that names them
    os.replace(path / "state.json.tmp", path / "state.json")


def _load_checkpoint(
    path: Path, model: nn.Module, opt: torch.optim.Optimizer, averaged: AveragedModel | None = None
) -> dict:
    tensors = load_file(path / "state.safetensors")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if averaged is not None:
        averaged.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("swa.")})
    params = opt.param_groups[0]["params"]
    for k, v in tensors.items():
        if k.startswith("momentum."):
            opt.state[params[int(k[9:])]]["momentum_buffer"] = v.to(params[0].device)
    return json.loads((path / "state.json").read_text())


def start(
    model: nn.Module,
    recipe: Recipe,
    run_dir: Path,
    resume: bool,
    settings: dict | None = None,
    what: str = "recipe",
    averaged: AveragedModel | None = None,
) -> tuple[torch.optim.Optimizer, dict]:
    """The optimizer (SGD, Nesterov) and the run state, fresh or resumed from `run_dir`'s checkpoint (with the
    running SWA average into `averaged`, if given).

    A checkpoint made with another recipe (or other `settings`, stored in the state) is refused, not mixed in.
    """
    opt = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=True, weight_decay=recipe.weight_decay
    )
    settings = settings or {}
    state = {"step": 0, "elapsed": 0.0, "history": [], "recipe": asdict(recipe), **settings}
    if resume and (run_dir / "state.json").exists():
        state = _load_checkpoint(run_dir, model, opt, averaged)
        if state["recipe"] != asdict(recipe) or any(state.get(k) != v for k, v in settings.items()):
            raise ValueError(f"the checkpoint in {run_dir} was made with another {what}; delete it or drop --resume")
    elif resume:
        print(f"no checkpoint in {run_dir}; starting a new run", file=sys.stderr)
    return opt, state


def fit(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    state: dict,
    recipe: Recipe,
    *,
    steps_per_epoch: int,
    batch: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    on_epoch: Callable[[nn.Module], dict],
    run_dir: Path,
    device: torch.device,
    stop_after: int | None = None,
    clip: float | None = None,
    desc: str = "",
    progress: bool = True,
    averaged: AveragedModel | None = None,
    compile_model: bool = False,
) -> list[float]:
    """The training loop of every model here (base and parity); returns this call's per-step losses.

    Global step s of epoch e = s // steps_per_epoch takes `batch(e, i)` (inputs, targets), sets the one-cycle rate,
    runs the forward pass in channels-last memory (under bf16 autocast if `native_bf16`), and steps the optimizer
    (gradient norm clipped to `clip` if given), and adds the weights to `averaged` where `swa_snapshot_due`. With
    `compile_model` the training forward pass runs through `torch.compile` (one graph per batch shape). At each
    epoch's end `on_epoch(model)` adds its metrics to ``state["history"]`` with the epoch's mean loss; a checkpoint
    (with `averaged`) is written every ``recipe.ckpt_every`` steps, at each epoch's end and at `stop_after` (then the
    loop stops, as if interrupted). A non-finite loss stops with a `FloatingPointError`.
    """
    total = recipe.total_epochs * steps_per_epoch
    bf16 = native_bf16(device)
    bar = tqdm(total=total, initial=state["step"], disable=not progress, desc=desc, unit="step")
    t0 = time.perf_counter() - state["elapsed"]
    losses: list[float] = []
    forward = torch.compile(model, dynamic=False) if compile_model else model
    while state["step"] < total:
        epoch, i = divmod(state["step"], steps_per_epoch)
        xb, yb = batch(epoch, i)
        xb, yb = xb.to(device).contiguous(memory_format=torch.channels_last), yb.to(device)
        for g in opt.param_groups:
            g["lr"] = learning_rate(recipe, state["step"], steps_per_epoch)
        model.train()
        with autocast(device, bf16):
            out = forward(xb)
        loss = loss_fn(out.float(), yb)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the training loss became {loss.item()} at step {state['step']}: lower the learning rate "
                f"(--lr, now {recipe.lr})"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        state["step"] += 1
        if averaged is not None and swa_snapshot_due(recipe, state["step"], steps_per_epoch):
            averaged.update_parameters(model)
        losses.append(loss.item())
        bar.update(1)
        if yb.dtype == torch.long:  # class labels: show the batch accuracy too
            bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{(out.argmax(1) == yb).float().mean().item():.3f}")
        else:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        end_of_epoch = state["step"] % steps_per_epoch == 0
        if end_of_epoch:
            metrics = on_epoch(model)
            mean_loss = float(np.mean(losses[-(i + 1) :]))  # the epoch's steps run in this call
            state["history"].append({"epoch": epoch + 1, "loss": mean_loss, **metrics})
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            bar.write(f"epoch {epoch + 1}/{recipe.total_epochs}: {shown}")
        if end_of_epoch or state["step"] % recipe.ckpt_every == 0 or state["step"] == stop_after:
            state["elapsed"] = time.perf_counter() - t0
            _save_checkpoint(run_dir, model, opt, state, averaged)
        if state["step"] == stop_after:
            break
    bar.close()
    state["elapsed"] = time.perf_counter() - t0
    return losses


def train(
    dataset: str,
    arch: str,
    recipe: Recipe | None = None,
    *,
    device: str = "auto",
    resume: bool = False,
    warm_start: bool = False,
    subset: int | None = None,
    stop_after: int | None = None,
    run_dir: Path | None = None,
    progress: bool = True,
    compile_model: bool = False,
) -> tuple[nn.Module, dict]:
    """Train `arch` on `dataset`; return the model and a summary (accuracy, epochs, wall time, history).

    `subset` trains on the first n images (smoke tests); `stop_after` stops after that many global steps, as if
    interrupted; `resume` continues from the run's checkpoint in `run_dir` (default: checkpoint_dir()/dataset-arch);
    `compile_model` compiles the training forward pass (`torch.compile`; `make bench-train` measures the gain).
    `warm_start` (when no checkpoint is resumed) starts the recipe's restart (or SWA phase) from the shipped model
    that ends where it begins (`models.load`), taking over that model card's history and wall time.
    With an SWA phase the model returned is the average of its snapshots, its BatchNorm statistics recomputed over
    the training images; ``state["swa"]`` records how (and the last SGD weights' test accuracy).
    """
    recipe = recipe or recipe_for(dataset, arch)
    dev = pick_device(device)
    run_dir = Path(run_dir or checkpoint_dir() / f"{dataset}-{arch}{seed_variant(recipe.seed)}")
    torch.manual_seed(recipe.seed)

    x, y = data.load(dataset, "train")
    x, y = data.to_tensor(x[:subset], dataset), torch.as_tensor(y[:subset])
    model = models.build(arch, dataset).to(dev).to(memory_format=torch.channels_last)
    steps_per_epoch = math.ceil(len(x) / recipe.batch_size)
    averaged = AveragedModel(model) if recipe.swa_epochs else None
    opt, state = start(model, recipe, run_dir, resume, averaged=averaged)
    if warm_start and state["step"] == 0:
        if recipe.seed:
            raise ValueError(f"--warm-start continues the shipped seed-0 model; it cannot start seed {recipe.seed}")
        state = _warm_state(model, dataset, arch, recipe, steps_per_epoch)

    def batch(epoch: int, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.randperm(len(x), generator=_generator(recipe.seed, epoch))
        idx = order[i * recipe.batch_size : (i + 1) * recipe.batch_size]
        return augment(x[idx], recipe, _generator(recipe.seed, epoch, i, 1)), y[idx]

    fit(
        model, opt, state, recipe, steps_per_epoch=steps_per_epoch, batch=batch,
        loss_fn=nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing),
        on_epoch=lambda m: {
            "test_accuracy": evaluate(m, dataset, dev, bf16=native_bf16(dev), n=None if subset is None else 200)
        },
        run_dir=run_dir, device=dev, stop_after=stop_after, desc=f"{dataset}/{arch}", progress=progress,
        averaged=averaged, compile_model=compile_model,
    )  # fmt: skip
    state["torch_compile"] = compile_model
    if averaged is None or state["step"] < recipe.total_epochs * steps_per_epoch:
        return model.eval(), state
    batches = (x[i : i + 500].contiguous(memory_format=torch.channels_last) for i in range(0, len(x), 500))
    update_bn(batches, averaged, dev)
    state["swa"] = {
        "snapshots": int(averaged.n_averaged), "every_steps": recipe.swa_every, "bn_images": len(x),
        "last_sgd_test_accuracy": state["history"][-1]["test_accuracy"],
    }  # fmt: skip
    return averaged.module.eval(), state


# what a warm-started card (base or parity model) keeps of the card it started from: with `recipe` and its own
# `warm_start`, the whole chain of cycles (older cards have no precision field)
WARM_START_FIELDS = (
    "weights_sha256", "test_accuracy", "command", "wall_time_s", "device", "precision", "recipe", "warm_start",
)  # fmt: skip
# what may differ between a later phase's recipe and that of the model it starts from: a restart may follow any
# first cycle; an SWA phase follows the model of the same cycles
SWA_FIELDS = ("swa_epochs", "swa_lr", "swa_every", "ckpt_every")
CYCLE_FIELDS = ("epochs", "restart_epochs", "restart_lr", *SWA_FIELDS)


def _warm_state(model: nn.Module, dataset: str, arch: str, recipe: Recipe, steps_per_epoch: int) -> dict:
    """Load the shipped model into `model`; the run state where `recipe`'s restart (or SWA phase) begins.

    The shipped model must have been trained for `recipe.epochs` epochs (restart; in one cycle or a chain of them),
    or with this recipe's cycles (SWA phase), with the same batch size, optimizer and augmentation, so that phases
    can follow one another."""
    card = models.load_card(dataset, arch)
    if recipe.swa_epochs and card["epochs"] == recipe.cycle_epochs:
        begins, free, follows = "SWA phase", SWA_FIELDS, True
    else:
        begins, free, follows = "restart", CYCLE_FIELDS, recipe.restart_epochs > 0 and card["epochs"] == recipe.epochs
    same = {k: v for k, v in asdict(recipe).items() if k not in free}
    if not follows or any(card["recipe"].get(k, v) != v for k, v in same.items()):
        raise ValueError(
            f"--warm-start needs a recipe whose restart (or SWA phase) follows the {card['epochs']} epochs of "
            f"{models.card_path(dataset, arch)} ({card['command']!r}, {card['recipe']}); this recipe is {recipe}"
        )
    model.load_state_dict(models.load(dataset, arch).state_dict())
    path = models.weights_path(dataset, arch)
    print(f"warm start: the {begins} begins from {path} ({card['epochs']} epochs)", file=sys.stderr)
    kept = {k: card[k] for k in WARM_START_FIELDS if k in card}
    return {
        "step": card["epochs"] * steps_per_epoch, "elapsed": card["wall_time_s"], "history": card["history"],
        "recipe": asdict(recipe), "warm_start": kept,
    }  # fmt: skip


# ---------------------------------------------------------------- main


def half_copy(model: nn.Module, arch: str, dataset: str) -> nn.Module:
    """A float32 copy of `model` with its weights rounded to fp16 (what `models.save(half=True)` stores)."""
    half = models.build(arch, dataset)
    half.load_state_dict({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    return half


def run_record(state: dict, device: torch.device, command: str) -> dict:
    """The model-card fields of a training run: recipe, seed, history, wall time, device, torch version, command."""
    cpu = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return {
        "epochs": sum(state["recipe"].get(k, 0) for k in ("epochs", "restart_epochs", "swa_epochs")),
        "recipe": state["recipe"],
        "seed": state["recipe"]["seed"],
        "history": state["history"],
        "wall_time_s": round(state["elapsed"], 1),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "precision": "bf16 autocast" if native_bf16(device) else "float32",
        "torch_version": torch.__version__,
        "torch_compile": state.get("torch_compile", False),
        "command": command,
    }


def recorded_command(command: str, state: dict) -> str:
    """The command a model card records: without --resume, and with --warm-start where the run began with one."""
    warm = " --warm-start" if "warm_start" in state and "--warm-start" not in command else ""
    return command.replace(" --resume", warm)


def finish(model: nn.Module, dataset: str, arch: str, state: dict, device: str, command: str) -> dict:
    """Evaluate fp32 and fp16 weights on the full test set; save (fp16 if within 0.05 points) with a model card."""
    dev = pick_device(device)
    model = model.float().to(memory_format=torch.contiguous_format)
    acc32 = evaluate(model, dataset, dev, bf16=False)
    acc16 = evaluate(half_copy(model, arch, dataset).to(dev), dataset, dev, bf16=False)
    use_half = abs(acc16 - acc32) <= 0.0005
    card = {
        "dataset": dataset,
        "arch": arch,
        "test_accuracy": acc16 if use_half else acc32,
        "test_accuracy_fp32": acc32,
        **({"test_accuracy_bf16_autocast": evaluate(model, dataset, dev, bf16=True)} if native_bf16(dev) else {}),
        **run_record(state, dev, command),
        **{k: state[k] for k in ("swa", "warm_start") if k in state},
    }
    return models.save(model, dataset, arch, card, half=use_half, variant=seed_variant(state["recipe"]["seed"]))


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(
        prog="approxifer train", description="Train a base model and write models/<dataset>-<arch>.*"
    )
    p.add_argument("dataset", choices=list(data.DATASETS))
    p.add_argument("arch", choices=list(models.ARCHS))
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--restart-epochs", type=int, help="epochs of the warm restart after --epochs (0: none)")
    p.add_argument("--restart-lr", type=float, help="peak learning rate of the warm restart")
    p.add_argument("--swa-epochs", type=int, help="epochs at a constant rate whose weights are averaged (0: none)")
    p.add_argument("--swa-lr", type=float, help="the constant learning rate of the SWA phase")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument(
        "--warm-start", action="store_true", help="start the restart (or SWA phase) from the shipped model it follows"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward pass (faster on CPU)")
    a = p.parse_args(argv)
    recipe = recipe_for(
        a.dataset, a.arch, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
        restart_epochs=a.restart_epochs, restart_lr=a.restart_lr, swa_epochs=a.swa_epochs, swa_lr=a.swa_lr,
    )  # fmt: skip
    try:
        model, state = train(
            a.dataset, a.arch, recipe,
            device=a.device, resume=a.resume, warm_start=a.warm_start, compile_model=a.compile,
        )  # fmt: skip
    except (ValueError, models.ModelError) as e:
        raise SystemExit(f"error: {e}") from None
    command = "approxifer train " + shlex.join(argv if argv is not None else sys.argv[1:])
    card = finish(model, a.dataset, a.arch, state, a.device, recorded_command(command, state))
    print(json.dumps({k: card[k] for k in ("dataset", "arch", "test_accuracy", "weights_dtype", "wall_time_s")}))
