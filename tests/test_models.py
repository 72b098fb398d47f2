"""The model registry, trained weights with verified checksums, and a resumable training run."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch

from approxifer import data, models, train


@pytest.mark.parametrize("arch", list(models.ARCHS))
@pytest.mark.parametrize("dataset", list(data.DATASETS))
def test_every_architecture_builds_for_every_input_shape(arch, dataset):
    net = models.build(arch, dataset).eval()
    h, w, c = data.info(dataset).shape
    with torch.no_grad():
        assert net(torch.zeros(2, c, h, w)).shape == (2, 10)


def test_resnets_have_the_cifar_stem():
    net = models.build("resnet18", "mnist")
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1) and net.conv1.in_channels == 1
    assert isinstance(net.maxpool, torch.nn.Identity)
    assert sum(p.numel() for p in models.build("resnet18", "cifar10").parameters()) == 11_173_962


def test_unknown_architecture_lists_the_known_ones():
    known = "resnet18, resnet34, vgg16, mobilenetv2, lenet5, mlp"
    with pytest.raises(ValueError, match=f"unknown architecture 'vgg99'; known: {known}"):
        models.build("vgg99", "mnist")


@pytest.mark.parametrize("arch", ["lenet5", "mlp"])
def test_shipped_weights_load_verified_and_match_their_card(arch):
    card = models.load_card("mnist", arch)
    model = models.load("mnist", arch)
    assert not model.training
    acc = train.evaluate(model, "mnist", torch.device("cpu"), bf16=False, n=2000)
    assert acc > card["test_accuracy"] - 0.02  # the first 2,000 test images, not the whole set


def test_tampered_weights_are_rejected(tmp_path, monkeypatch):
    for suffix in ("json", "safetensors"):
        shutil.copy(models.models_dir() / f"mnist-mlp.{suffix}", tmp_path / f"mnist-mlp.{suffix}")
    monkeypatch.setenv("APPROXIFER_MODELS", str(tmp_path))
    blob = bytearray((tmp_path / "mnist-mlp.safetensors").read_bytes())
    blob[-1] ^= 0x01
    (tmp_path / "mnist-mlp.safetensors").write_bytes(bytes(blob))
    with pytest.raises(models.ModelError, match=r"mnist-mlp.safetensors has sha256 .* but its model card records"):
        models.load("mnist", "mlp")


def test_missing_weights_name_the_command_that_makes_them(tmp_path, monkeypatch):
    monkeypatch.setenv("APPROXIFER_MODELS", str(tmp_path))
    with pytest.raises(models.ModelError, match="approxifer train cifar10 resnet34"):
        models.load("cifar10", "resnet34")


def test_interrupted_training_resumes_to_the_same_weights(tmp_path):
    recipe = train.recipe_for("mnist", "lenet5", epochs=2, batch_size=16, ckpt_every=1000)
    kwargs = {"subset": 32, "progress": False}  # 2 steps per epoch, 4 in all
    full, s_full = train.train("mnist", "lenet5", recipe, run_dir=tmp_path / "a", **kwargs)
    _, s_cut = train.train("mnist", "lenet5", recipe, run_dir=tmp_path / "b", stop_after=3, **kwargs)
    assert s_cut["step"] == 3 and (tmp_path / "b" / "state.safetensors").exists()
    resumed, s_res = train.train("mnist", "lenet5", recipe, run_dir=tmp_path / "b", resume=True, **kwargs)
    assert s_res["step"] == s_full["step"] == 4
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="another recipe"):
        train.train("mnist", "lenet5", train.recipe_for("mnist", "lenet5", epochs=3), run_dir=tmp_path / "b",
                    resume=True, **kwargs)  # fmt: skip


def test_a_diverging_run_stops_with_a_clear_error(tmp_path):
    recipe = train.recipe_for("mnist", "lenet5", epochs=1, batch_size=16, lr=1e12, warmup=0.0)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        train.train("mnist", "lenet5", recipe, run_dir=tmp_path, subset=64, progress=False)


def test_the_restart_is_a_second_lower_one_cycle():
    r = train.Recipe(epochs=2, lr=0.1, warmup=0.5, restart_epochs=1, restart_lr=0.02)  # 10 steps an epoch
    lrs = [train.learning_rate(r, s, 10) for s in range(30)]
    assert lrs[0] == pytest.approx(0.01) and lrs[10] == pytest.approx(0.1) and lrs[19] == pytest.approx(0.01)
    assert lrs[20] == pytest.approx(0.002) and lrs[25] == pytest.approx(0.02) and lrs[29] == pytest.approx(0.004)
    assert r.total_epochs == 3


def test_a_warm_start_continues_the_shipped_model_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("APPROXIFER_MODELS", str(tmp_path / "models"))
    kwargs = {"subset": 32, "progress": False}  # 2 steps per epoch
    first = train.recipe_for("mnist", "lenet5", epochs=1, batch_size=16, ckpt_every=1000)
    model, state = train.train("mnist", "lenet5", first, run_dir=tmp_path / "first", **kwargs)
    record = train.run_record(state, torch.device("cpu"), "cmd")
    card = models.save(model, "mnist", "lenet5", {"test_accuracy": 0.5, **record}, half=False)
    recipe = train.recipe_for("mnist", "lenet5", epochs=1, batch_size=16, ckpt_every=1000, restart_epochs=2)
    warm, s_warm = train.train("mnist", "lenet5", recipe, run_dir=tmp_path / "a", warm_start=True, **kwargs)
    assert s_warm["step"] == 6 and [h["epoch"] for h in s_warm["history"]] == [1, 2, 3]
    kept = ("weights_sha256", "wall_time_s", "precision")
    assert {k: s_warm["warm_start"][k] for k in kept} == {k: card[k] for k in kept}
    assert not torch.equal(warm.state_dict()["0.weight"], model.state_dict()["0.weight"])
    _, s_cut = train.train("mnist", "lenet5", recipe, run_dir=tmp_path / "b", warm_start=True, stop_after=3, **kwargs)
    assert s_cut["step"] == 3
    resumed, s_res = train.train("mnist", "lenet5", recipe, run_dir=tmp_path / "b", resume=True, **kwargs)
    assert s_res["warm_start"] == s_warm["warm_start"]
    assert train.recorded_command("approxifer train mnist lenet5 --resume", s_res).endswith("lenet5 --warm-start")
    assert train.recorded_command("approxifer train mnist lenet5 --resume", state).endswith("lenet5")
    for (k, a), b in zip(warm.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    for wrong in (first, replace(recipe, epochs=2), replace(recipe, weight_decay=0.0)):
        with pytest.raises(ValueError, match="--warm-start needs a recipe whose restart follows the 1 epochs"):
            train.train("mnist", "lenet5", wrong, run_dir=tmp_path / "c", warm_start=True, **kwargs)
    # a third cycle follows the second: the card keeps the whole chain
    record = {**train.run_record(s_warm, torch.device("cpu"), "c2"), "warm_start": s_warm["warm_start"]}
    models.save(warm, "mnist", "lenet5", {"test_accuracy": 0.6, **record}, half=False)
    third = replace(recipe, epochs=3, restart_epochs=1, restart_lr=0.01)
    _, s_third = train.train("mnist", "lenet5", third, run_dir=tmp_path / "d", warm_start=True, **kwargs)
    assert s_third["step"] == 8 and [h["epoch"] for h in s_third["history"]] == [1, 2, 3, 4]
    chain = s_third["warm_start"]
    assert chain["command"] == "c2" and chain["recipe"]["restart_epochs"] == 2
    assert chain["warm_start"]["command"] == "cmd"
