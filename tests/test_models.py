"""The model registry, trained weights with verified checksums, and a resumable training run."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

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


def test_a_compiled_forward_pass_trains_the_same_model(tmp_path, monkeypatch):
    compiled_modules, batch_sizes = [], []

    def spy(module, **options):
        compiled_modules.append(module)
        forward = real_compile(module, **options)
        return lambda x: batch_sizes.append(len(x)) or forward(x)

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", spy)
    recipe = train.recipe_for("mnist", "lenet5", epochs=1, batch_size=16, ckpt_every=1000)
    kwargs = {"subset": 40, "progress": False}  # batches of 16, 16 and 8: two shapes
    eager, s_eager = train.train("mnist", "lenet5", recipe, run_dir=tmp_path / "a", **kwargs)
    assert not compiled_modules
    compiled, s_comp = train.train("mnist", "lenet5", recipe, run_dir=tmp_path / "b", compile_model=True, **kwargs)
    assert compiled_modules == [compiled]  # the plain module is returned (and saved), not the compiled wrapper
    assert batch_sizes == [16, 16, 8]  # every training step ran through it
    assert (s_eager["torch_compile"], s_comp["torch_compile"]) == (False, True)
    for (k, a), b in zip(eager.state_dict().items(), compiled.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)


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
        with pytest.raises(ValueError, match=r"needs a recipe whose restart \(or SWA phase\) follows the 1 epochs"):
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


def test_the_swa_phase_runs_at_a_constant_rate_and_snapshots_on_schedule():
    r = train.Recipe(epochs=2, warmup=0.5, restart_epochs=1, swa_epochs=2, swa_lr=0.03, swa_every=4)  # 10 steps/epoch
    assert r.cycle_epochs == 3 and r.total_epochs == 5
    assert [train.learning_rate(r, s, 10) for s in (29, 30, 49)] == [pytest.approx(0.01), 0.03, 0.03]
    due = [s for s in range(51) if train.swa_snapshot_due(r, s, 10)]
    assert due == [34, 38, 42, 46, 50]  # every 4 steps of the phase, and after its last step
    assert not any(train.swa_snapshot_due(replace(r, swa_epochs=0), s, 10) for s in range(51))


def test_swa_returns_the_average_with_batchnorm_recomputed_and_resumes(tmp_path):
    recipe = train.recipe_for("mnist", "resnet18", epochs=1, batch_size=16, swa_epochs=2, swa_every=3, ckpt_every=1000)
    kwargs = {"subset": 64, "progress": False}  # 4 steps an epoch: snapshots after steps 7, 10 and 12
    full, s_full = train.train("mnist", "resnet18", recipe, run_dir=tmp_path / "a", **kwargs)
    last_sgd = s_full["history"][-1]["test_accuracy"]
    assert s_full["swa"] == {"snapshots": 3, "every_steps": 3, "bn_images": 64, "last_sgd_test_accuracy": last_sgd}
    saved = load_file(tmp_path / "a" / "state.safetensors")
    weight = "layer1.0.conv1.weight"
    assert torch.equal(full.state_dict()[weight], saved[f"swa.module.{weight}"])  # the average, not the last SGD step
    assert not torch.equal(saved[f"swa.module.{weight}"], saved[f"model.{weight}"])
    x = data.to_tensor(data.load("mnist", "train")[0][:64], "mnist")
    with torch.no_grad():
        features = full.conv1(x)  # BatchNorm statistics of the averaged weights over the training images
    assert torch.allclose(full.bn1.running_mean, features.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(full.bn1.running_var, features.var((0, 2, 3)), rtol=1e-3)
    _, s_cut = train.train("mnist", "resnet18", recipe, run_dir=tmp_path / "b", stop_after=8, **kwargs)
    assert "swa" not in s_cut  # interrupted in the SWA phase, after its first snapshot
    resumed, s_res = train.train("mnist", "resnet18", recipe, run_dir=tmp_path / "b", resume=True, **kwargs)
    assert s_res["swa"] == s_full["swa"]
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    record = train.run_record(s_full, torch.device("cpu"), "cmd")
    assert record["epochs"] == 3


def test_a_warm_start_begins_the_swa_phase_after_the_same_cycles(tmp_path, monkeypatch):
    monkeypatch.setenv("APPROXIFER_MODELS", str(tmp_path / "models"))
    kwargs = {"subset": 32, "progress": False}  # 2 steps per epoch
    cycles = train.recipe_for("mnist", "resnet18", epochs=1, batch_size=16, ckpt_every=1000, restart_epochs=1)
    model, state = train.train("mnist", "resnet18", cycles, run_dir=tmp_path / "cycles", **kwargs)
    record = {"test_accuracy": 0.5, **train.run_record(state, torch.device("cpu"), "c")}
    card = models.save(model, "mnist", "resnet18", record, half=False)
    swa = replace(cycles, swa_epochs=1, swa_every=1)
    _, s_swa = train.train("mnist", "resnet18", swa, run_dir=tmp_path / "a", warm_start=True, **kwargs)
    assert s_swa["step"] == 6 and [h["epoch"] for h in s_swa["history"]] == [1, 2, 3]
    assert s_swa["swa"]["snapshots"] == 2 and s_swa["warm_start"]["weights_sha256"] == card["weights_sha256"]
    for wrong in (replace(swa, restart_lr=0.01), replace(swa, restart_epochs=2), replace(swa, swa_epochs=0)):
        with pytest.raises(ValueError, match=r"whose restart \(or SWA phase\) follows the 2 epochs"):
            train.train("mnist", "resnet18", wrong, run_dir=tmp_path / "b", warm_start=True, **kwargs)


@pytest.mark.parametrize(
    ("card", "match"),
    [
        ("{not json", r"cannot read the model card .*mnist-mlp\.json: Expecting property name"),
        ("[1, 2]", r"the model card .*mnist-mlp\.json holds a JSON list, not an object"),
        ('{"dataset": "mnist", "arch": "mlp"}', r"the model card .*mnist-mlp\.json has no weights_sha256"),
        ('{"weights_sha256": "abc"}', r"mnist-mlp\.json has no weights_sha256 \(64 hex digits\), got 'abc'"),
        ('{"arch": "lenet5", "weights_sha256": "' + "0" * 64 + '"}',
         r"the model card .*mnist-mlp\.json is for arch 'lenet5', but its file name says 'mlp'"),
        ('{"dataset": "cifar10", "weights_sha256": "' + "0" * 64 + '"}', r"is for dataset 'cifar10'"),
        (b"\xff\xfe", r"cannot read the model card .*mnist-mlp\.json"),
    ],
)  # fmt: skip
def test_a_bad_model_card_is_a_model_error_naming_the_file(tmp_path, monkeypatch, card, match):
    shutil.copy(models.models_dir() / "mnist-mlp.safetensors", tmp_path / "mnist-mlp.safetensors")
    path = tmp_path / "mnist-mlp.json"
    path.write_bytes(card if isinstance(card, bytes) else card.encode())
    monkeypatch.setenv("APPROXIFER_MODELS", str(tmp_path))
    for call in (lambda: models.load_card("mnist", "mlp"), lambda: models.load("mnist", "mlp")):
        with pytest.raises(models.ModelError, match=match):
            call()


def test_a_classical_card_for_another_model_is_refused(tmp_path, monkeypatch):
    from approxifer import classical

    shutil.copy(models.models_dir() / "mnist-logreg.safetensors", tmp_path / "mnist-logreg.safetensors")
    card = (models.models_dir() / "mnist-gbdt.json").read_text()
    (tmp_path / "mnist-logreg.json").write_text(card)
    monkeypatch.setenv("APPROXIFER_MODELS", str(tmp_path))
    with pytest.raises(models.ModelError, match=r"mnist-logreg\.json is for model 'gbdt', but its file name says"):
        classical.load("mnist", "logreg")
