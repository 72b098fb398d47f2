"""Training speed: one SGD step of the CIFAR-10 ResNet-18 recipe, eager vs. `torch.compile`d forward pass.

The step is `train.fit`'s: a batch of 256 augmented images in channels-last memory, the forward pass (bf16 autocast
where the hardware has it, else float32), label-smoothed cross-entropy, backward, SGD-Nesterov. Each mode runs its
warm-up steps (the compiled one: compilation) untimed, then the median of the timed steps; both are measured in this
one run and printed with their ratio. Run: `make bench-train` (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import statistics
import time

import torch

from approxifer import data, inference, models, train

DATASET, ARCH, WARMUP, TIMED = "cifar10", "resnet18", 2, 5


def step_seconds(compile_model: bool) -> float:
    """Median seconds per training step after the warm-up."""
    recipe = train.recipe_for(DATASET, ARCH)
    device = inference.pick_device("auto")
    bf16 = inference.native_bf16(device)
    torch.manual_seed(0)
    model = models.build(ARCH, DATASET).to(device).to(memory_format=torch.channels_last).train()
    forward = torch.compile(model, dynamic=False) if compile_model else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    x, y = data.load(DATASET, "train")
    xb = train.augment(data.to_tensor(x[: recipe.batch_size], DATASET), recipe, torch.Generator().manual_seed(0))
    xb, yb = xb.to(device).contiguous(memory_format=torch.channels_last), torch.as_tensor(y[: len(xb)]).to(device)
    runs = []
    for i in range(WARMUP + TIMED):
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = forward(xb)
        loss = loss_fn(out.float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= WARMUP:
            runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main() -> None:
    device = inference.pick_device("auto")
    batch = train.recipe_for(DATASET, ARCH).batch_size
    precision = "bf16 autocast" if inference.native_bf16(device) else "float32"
    where = f"{device.type}, {torch.get_num_threads()} threads" if device.type == "cpu" else device.type
    eager, compiled = step_seconds(False), step_seconds(True)
    print(f"{DATASET} {ARCH} training step, batch {batch}, channels-last, {precision} ({where}), "
          f"median of {TIMED} steps:")  # fmt: skip
    print(f"  eager:          {eager:6.2f} s / step  {batch / eager:7.1f} img/s")
    print(f"  torch.compile:  {compiled:6.2f} s / step  {batch / compiled:7.1f} img/s")
    print(f"  ratio eager / compiled: {eager / compiled:.2f}x")


if __name__ == "__main__":
    main()
