"""pix2pix: networks, adversarial training in both modes, resume, and the checkpoint contract."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from mineralseg.cli import main
from mineralseg.errors import ConfigError, UserError
from mineralseg.evaluate.checkpoint import load_checkpoint_model
from mineralseg.evaluate.evaluate import evaluate
from mineralseg.infer.predict import PredictSettings, predict
from mineralseg.model_card import ModelCard
from mineralseg.models import PatchDiscriminator, Pix2PixGenerator, build_model, min_input_size, receptive_field
from mineralseg.models.pix2pix import one_hot_labels, tanh_to_grey
from mineralseg.train import NonFiniteLossError, train
from mineralseg.train.config import load_train_config
from mineralseg.train.gan_module import GANModule
from mineralseg.train.run_folder import run_summary

from conftest import tiny_train_config, write_tiny_dataset

#: Tiny networks: a few seconds per run on one CPU core.
_GENERATOR = {"base_filters": 8, "depth": 3}
_DISCRIMINATOR = {"base_filters": 8}


def _gan_config(dataset: Path, runs: Path, mode: str, **changes) -> dict:
    changes = {"model": {"arch": "pix2pix", "options": dict(_GENERATOR)},
               "gan": {"mode": mode, "sample_every": 3, "sample_count": 2, "discriminator": dict(_DISCRIMINATOR)},
               **changes}
    return tiny_train_config(dataset, runs, **changes)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _cli(args, capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def segment_run(tiny_dataset, tmp_path_factory) -> Path:
    """2 epochs (8 batches) of SEM -> map pix2pix on the tiny dataset; do not modify."""
    return train(_gan_config(tiny_dataset, tmp_path_factory.mktemp("gan-seg"), "segment"))


@pytest.fixture(scope="module")
def synthesize_run(tiny_dataset, tmp_path_factory) -> Path:
    """2 epochs (8 batches) of map -> SEM pix2pix on the tiny dataset; do not modify."""
    return train(_gan_config(tiny_dataset, tmp_path_factory.mktemp("gan-syn"), "synthesize"))


# --------------------------------------------------------------------------- networks
def test_generator_builds_through_the_factory_with_its_smallest_input():
    model = build_model("pix2pix", None, num_classes=4, in_channels=1, base_filters=8, depth=3, norm="instance")
    assert model.input_divisor == model.min_input_size == 8 == min_input_size("pix2pix", depth=3, base_filters=8)
    assert model.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 4, 8, 8)  # 1 x 1 innermost level works
    assert model.unused_parameters == ()
    synth = build_model("pix2pix", None, num_classes=4, in_channels=4, out_channels=1, output="tanh",
                        base_filters=8, depth=4)
    out = synth(one_hot_labels(torch.randint(0, 5, (2, 32, 32)), 4) * 50)
    assert out.shape == (2, 1, 32, 32) and out.abs().max() <= 1
    assert synth.min_input_size == 16
    # the study's generator: 32 base filters, 768-px inputs
    assert build_model("pix2pix", None, num_classes=5, base_filters=32).min_input_size == 256
    assert 768 % build_model("pix2pix", None, num_classes=5, base_filters=32).input_divisor == 0


def test_generator_options_and_dropout_placement():
    net = Pix2PixGenerator(3, base_filters=4, depth=8)
    levels_with_dropout = [k for k, block in enumerate(net.decoder)
                           if any(isinstance(m, torch.nn.Dropout) for m in block)]
    assert levels_with_dropout == [3, 4, 5]  # the three levels just outside the innermost (pix2pix's unet_256)
    convs = [m.weight for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    std = torch.cat([w.flatten() for w in convs]).std().item()
    assert 0.018 < std < 0.022  # N(0, 0.02) initialisation
    assert not any(isinstance(m, torch.nn.Dropout) for m in Pix2PixGenerator(3, depth=4, dropout=0).modules())
    # dropout is the noise source: on in training, off in eval
    net = Pix2PixGenerator(3, base_filters=4, depth=5, dropout=0.5)
    x = torch.randn(1, 1, 32, 32)
    net.train()
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))
    for bad, match in [({"depth": 1}, "depth must be an integer from 2"), ({"norm": "layer"}, "norm must be one of"),
                       ({"dropout": 1.0}, "dropout must be in"), ({"output": "sigmoid"}, "output must be one of")]:
        with pytest.raises(ConfigError, match=match):
            build_model("pix2pix", None, num_classes=3, **bad)
    with pytest.raises(ConfigError, match="pix2pix takes no encoder"):
        build_model("pix2pix", "resnet18", num_classes=3)
    with pytest.raises(ConfigError, match="did you mean 'base_filters'"):
        build_model("pix2pix", None, num_classes=3, base_filter=8)


def test_patchgan_receptive_field_is_70_by_default():
    default = PatchDiscriminator(1 + 4)
    assert receptive_field(default) == 70
    assert [receptive_field(PatchDiscriminator(2, layers=n)) for n in (1, 2, 4)] == [16, 34, 142]
    # measured: the input pixels one patch score depends on span exactly 70 x 70
    net = PatchDiscriminator(2, base_filters=4).double().eval()
    x = torch.randn(1, 2, 128, 128, dtype=torch.float64, requires_grad=True)
    scores = net(x)
    assert scores.shape == (1, 1, 14, 14)
    scores[0, 0, 7, 7].backward()
    rows, cols = np.nonzero(x.grad.abs().sum(1)[0].numpy())
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70


def test_one_hot_and_grey_conversions():
    labels = torch.tensor([[[0, 2], [255, 1]]])
    onehot = one_hot_labels(labels, 3, 255)
    assert onehot.dtype == torch.float32 and onehot.shape == (1, 3, 2, 2)
    assert onehot[0, :, 1, 0].sum() == 0 and onehot[0, 2, 0, 1] == 1 and onehot.sum() == 3
    grey = tanh_to_grey(torch.tensor([-1.0, 0.0, 1.0, 2.0]))
    assert grey.dtype == torch.uint8 and grey.tolist() == [0, 128, 255, 255]


# --------------------------------------------------------------------------- config
def test_bad_gan_configs_are_config_errors(tmp_path):
    base = {"dataset": str(tmp_path), "model": {"arch": "pix2pix"}}
    cases = [
        ({"dataset": str(tmp_path), "model": {"arch": "unet"}, "gan": {}}, "a gan: section trains a pix2pix"),
        (base, "add a gan: section"),
        ({**base, "gan": {"mode": "paint"}}, "gan.mode"),
        ({**base, "gan": {"wieght": 10}}, "did you mean 'weight'"),
        ({**base, "gan": {"mode": "synthesize", "dice": 1}}, "gan.dice .* only applies to mode segment"),
        ({**base, "gan": {"adversarial": "wgan"}}, "gan.adversarial"),
        ({**base, "gan": {"discriminator": {"layers": 0}}}, "gan.discriminator.layers"),
        ({**base, "gan": {"beta1": 1.0}}, "gan.beta1"),
        ({**base, "gan": {}, "optim": {"ema_decay": 0.99}}, "ema_decay is not supported"),
        ({**base, "gan": {}, "trainer": {"gradient_clip_val": 1.0}}, "gradient_clip_val is not supported"),
        ({**base, "gan": {}, "approach": "imagenet_full"}, "no pretrained encoder"),
        ({"dataset": str(tmp_path), "model": {"arch": "pix2pix", "options": {"output": "tanh"}}, "gan": {}},
         "follow from gan.mode"),
    ]
    for data, match in cases:
        with pytest.raises(ConfigError, match=match):
            load_train_config(data)
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match="input_size 16 is below 32, the smallest input a 3-layer PatchGAN"):
        train(_gan_config(write_tiny_dataset(tmp_path / "small", n_tiles=6, size=16, splits=(2, 2, 2)), runs,
                          "segment"))
    assert not runs.exists()  # refused before a run folder was made
    cfg = load_train_config({**base, "gan": {"mode": "synthesize"}})
    assert cfg.model.encoder is None and cfg.gan.weight == 100 and cfg.gan.lr_g == cfg.gan.lr_d == 2e-4
    assert cfg.gan.beta1 == 0.5 and cfg.gan.discriminator.layers == 3 and cfg.run_name() == "pix2pix-synthesize"


def test_shipped_gan_configs_are_valid():
    configs = Path(__file__).resolve().parents[2] / "configs"
    for name, mode in (("pix2pix-segment.yaml", "segment"), ("pix2pix-synthesize.yaml", "synthesize")):
        cfg = load_train_config(configs / name)
        assert cfg.gan.mode == mode and cfg.model.arch == "pix2pix" and cfg.model.options["base_filters"] == 32
        build_model("pix2pix", None, num_classes=5, **cfg.model.options)  # options the generator takes


def test_model_card_keeps_gan_mode_and_reads_old_cards_as_none(segment_run):
    _, card = load_checkpoint_model(segment_run)
    assert card.gan_mode == "segment"
    assert ModelCard.from_dict(card.to_dict()).gan_mode == "segment"
    old = card.to_dict()
    del old["gan_mode"]
    assert ModelCard.from_dict(old).gan_mode is None


# --------------------------------------------------------------------------- segment
def test_segment_mode_trains_with_finite_losses_and_sample_grids(segment_run):
    rows = _rows(segment_run / "metrics.csv")
    for name in ("train_loss_g_step", "train_loss_d_step", "train_loss_adv_step", "train_loss_pixel_step"):
        values = [float(r[name]) for r in rows if r.get(name)]
        assert len(values) == 8 and all(math.isfinite(v) for v in values), name
    assert [float(r["val_miou"]) for r in rows if r.get("val_miou")]  # validated like a CNN
    record = json.loads((segment_run / "run.json").read_text())
    assert record["status"] == "finished" and record["global_step"] == 16  # G and D steps of 8 batches
    assert record["best_val_miou"] is not None and (segment_run / "checkpoints" / "best.ckpt").is_file()
    samples = sorted((segment_run / "samples").glob("*.png"))
    assert [p.name for p in samples] == ["step-0000000.png", "step-0000003.png", "step-0000006.png"]
    grid = np.asarray(Image.open(samples[-1]))
    assert grid.shape == (2 * 64 + 2, 3 * 64 + 4, 3)  # 2 rows of SEM | truth | generated
    ckpt = torch.load(segment_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert len(ckpt["optimizer_states"]) == 2 and any(k.startswith("discriminator.") for k in ckpt["state_dict"])


def test_checkpoint_reloads_and_gives_the_same_output(segment_run):
    model, card = load_checkpoint_model(segment_run)
    assert card.gan_mode == "segment" and card.in_channels == 1 and card.validation_miou is not None
    assert not model.training
    module = GANModule.load_from_checkpoint(segment_run / "checkpoints" / "best.ckpt", map_location="cpu",
                                            weights_only=True).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        first = model(x)
        assert first.shape == (2, 3, 64, 64)
        assert torch.equal(first, model(x))  # eval mode: dropout off
        assert torch.allclose(first, module(x), atol=1e-6)


def test_segment_checkpoint_goes_through_evaluate_and_predict(segment_run, tiny_dataset, tmp_path):
    scores = evaluate(segment_run, tiny_dataset, out=tmp_path / "eval", panels=0, progress=False)
    assert 0 <= scores["miou"] <= 1 and scores["num_tiles"] == 4
    image = np.asarray(Image.open(next((tiny_dataset / "tiles").rglob("*_sem.png"))))
    tif = tmp_path / "section.tif"
    tifffile.imwrite(tif, np.tile(image, (2, 3)))
    (result,) = predict(segment_run, [tif], tmp_path / "pred", PredictSettings(sem_px=1, outline="none"),
                        progress=False)
    labels = tifffile.imread(result.out / "labels.tif")
    assert labels.shape == (128, 192) and set(np.unique(labels)) <= {0, 1, 2}


def test_a_gan_run_resumes_with_both_optimisers(tiny_dataset, tmp_path, monkeypatch):
    run = train(_gan_config(tiny_dataset, tmp_path / "runs", "segment", **{"trainer.max_epochs": 1}))
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 8
    seen = {}

    def remember(self):
        opts = self.trainer.optimizers
        seen["step"] = self.trainer.global_step
        seen["moments"] = [[opt.state[p]["exp_avg"].clone() for p in opt.param_groups[0]["params"]] for opt in opts]
        seen["discriminator"] = {k: v.clone() for k, v in self.discriminator.state_dict().items()}

    monkeypatch.setattr(GANModule, "on_train_start", remember, raising=False)
    assert train(resume=run, overrides={"trainer.max_epochs": 2}) == run
    assert seen["step"] == 8
    for k, opt_state in enumerate(saved["optimizer_states"]):  # 0: generator, 1: discriminator
        moments = [s["exp_avg"] for s in opt_state["state"].values()]
        assert len(moments) == len(seen["moments"][k]) > 0
        assert all(torch.equal(a, b) for a, b in zip(moments, seen["moments"][k]))
    assert len(seen["moments"][0]) != len(seen["moments"][1])  # really two different optimisers
    disc = {k[len("discriminator."):]: v for k, v in saved["state_dict"].items() if k.startswith("discriminator.")}
    assert all(torch.equal(disc[k], v) for k, v in seen["discriminator"].items())
    final = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 16
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished" and record["resumed"][0]["global_step"] == 8
    with pytest.raises(ConfigError, match="trains pix2pix gan.mode segment but the config gives pix2pix gan.mode s"):
        train(resume=run, overrides={"gan.mode": "synthesize", "trainer.max_epochs": 3})


def test_nan_generator_loss_stops_a_gan_run(tiny_dataset, tmp_path, monkeypatch):
    original = GANModule.pixel_loss

    def nan_from_batch_2(self, raw, batch, real):
        loss = original(self, raw, batch, real)
        return loss * float("nan") if self.training and self.trainer.global_step >= 4 else loss

    monkeypatch.setattr(GANModule, "pixel_loss", nan_from_batch_2)
    with pytest.raises(NonFiniteLossError, match="loss became NaN at step 5"):
        train(_gan_config(tiny_dataset, tmp_path / "runs", "segment"))


def test_bf16_mixed_precision_works_with_manual_optimisation(tiny_dataset, tmp_path):
    run = train(_gan_config(tiny_dataset, tmp_path / "runs", "synthesize",
                            **{"trainer.precision": "bf16-mixed", "trainer.max_epochs": 1}))
    record = json.loads((run / "run.json").read_text())
    assert record["device"]["precision"] == "bf16-mixed" and record["status"] == "finished"
    values = [float(r["train_loss_g_step"]) for r in _rows(run / "metrics.csv") if r.get("train_loss_g_step")]
    assert values and all(math.isfinite(v) for v in values)


# --------------------------------------------------------------------------- synthesize
def test_synthesize_mode_trains_and_its_generator_maps_labels_to_sem(synthesize_run):
    rows = _rows(synthesize_run / "metrics.csv")
    l1 = [float(r["val_l1"]) for r in rows if r.get("val_l1")]
    assert len(l1) == 2 and all(0 < v < 2 for v in l1)
    losses = [float(r["train_loss_g_step"]) for r in rows if r.get("train_loss_g_step")]
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses)
    record = json.loads((synthesize_run / "run.json").read_text())
    assert record["best_val_l1"] == pytest.approx(min(l1)) and record["best_val_miou"] is None
    assert f"best val L1 {min(l1):.3f}" in run_summary(synthesize_run)
    assert 0 < record["model"]["discriminator_parameters"]
    model, card = load_checkpoint_model(synthesize_run, purpose="synthesize")
    assert card.gan_mode == "synthesize" and card.in_channels == card.num_classes == 3
    assert card.model_options == {**_GENERATOR, "out_channels": 1, "output": "tanh"}
    labels = torch.randint(0, 3, (2, 32, 32))
    labels[:, :4] = card.ignore_index
    with torch.no_grad():
        sem = model(one_hot_labels(labels, card.num_classes, card.ignore_index))
    assert sem.shape == (2, 1, 32, 32) and sem.dtype == torch.float32 and sem.abs().max() <= 1
    assert torch.equal(sem, model(one_hot_labels(labels, 3)))  # eval mode: deterministic
    assert len(sorted((synthesize_run / "samples").glob("*.png"))) == 3


def test_checkpoints_of_the_wrong_kind_are_refused_in_one_line(synthesize_run, segment_run, trained_run,
                                                               tiny_dataset, tmp_path, capsys):
    with pytest.raises(UserError, match=r"is a pix2pix map -> SEM \(synthesize\) checkpoint; use `mineralseg synth"):
        load_checkpoint_model(synthesize_run)
    with pytest.raises(UserError, match="plain-unet segmentation checkpoint, not a map -> SEM generator"):
        load_checkpoint_model(trained_run, purpose="synthesize")
    with pytest.raises(UserError, match=r"pix2pix SEM -> map \(segment\) checkpoint, not a map -> SEM"):
        load_checkpoint_model(segment_run, purpose="synthesize")
    tif = tmp_path / "section.tif"
    tifffile.imwrite(tif, np.full((64, 64), 120, np.uint8))
    for args in (["evaluate", str(synthesize_run), "--dataset", str(tiny_dataset), "--out", str(tmp_path / "e")],
                 ["predict", str(synthesize_run), str(tif), "--out", str(tmp_path / "p"), "--sem-px", "1"]):
        code, err = _cli(args, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "(synthesize)" in lines[0], err
        assert not (tmp_path / "e").exists() and not (tmp_path / "p").exists()


# --------------------------------------------------------------------------- experiment tables
def test_a_pix2pix_row_sits_in_the_experiment_table_beside_a_cnn(tmp_path, tiny_dataset):
    import yaml

    from mineralseg.train.experiment import plan_experiment, run_experiment

    base = tiny_train_config(tiny_dataset, tmp_path / "unused", **{"trainer.max_epochs": 1})
    base.pop("run")
    base["model"].pop("options")
    base["gan"] = {"mode": "synthesize"}  # a base gan: section does not leak into the CNN row
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "base": base,
        "models": [
            {"arch": "plain-unet", "options": {"base_width": 8, "depth": 3}},
            {"arch": "pix2pix", "options": dict(_GENERATOR),
             "gan": {"sample_every": None, "discriminator": dict(_DISCRIMINATOR)}},
        ],
        "input_sizes": [32],
        "approaches": ["random", "imagenet_full"],  # pix2pix has no encoder: random only
        "panels": 0,
    }))
    plans = plan_experiment(grid, tmp_path / "exp")
    assert [(p.label, p.approach) for p in plans] == [("Custom model", "random"), ("GAN", "random")]
    assert plans[0].config.gan is None and plans[1].config.gan.mode == "segment"
    rows = run_experiment(grid, tmp_path / "exp")
    assert [r["model"] for r in rows] == ["Custom model", "GAN"]
    assert all(0 <= r["miou"] <= 1 and set(r["iou"]) == {"pore", "quartz", "clay"} for r in rows)
    md = (tmp_path / "exp" / "results.md").read_text()
    assert "| GAN |" in md
    bad = yaml.safe_load(grid.read_text())
    bad["models"][1]["gan"]["mode"] = "synthesize"
    grid.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="needs gan.mode segment"):
        plan_experiment(grid, tmp_path / "exp2")


# --------------------------------------------------------------------------- end to end
def test_a_trained_generator_draws_pairs_that_train_a_cnn(synthesize_run, segment_run, tiny_dataset, tmp_path,
                                                          capsys):
    """The whole GAN-augmentation path with real checkpoints: a map -> SEM pix2pix run,
    `mineralseg synthesize` on class maps, then a CNN trained with those pairs."""
    from mineralseg.data.manifest import load_manifest

    card = load_checkpoint_model(synthesize_run, purpose="synthesize")[1]
    rng = np.random.default_rng(3)
    maps = []
    for k in range(2):
        ids = rng.integers(0, card.num_classes, (96, 80)).astype(np.uint8)
        ids = np.kron(ids[::8, ::8], np.ones((8, 8), np.uint8))[:96, :80]  # blocky phases
        ids[:10], ids[:, :10] = card.ignore_index, card.ignore_index
        maps.append(tmp_path / f"map{k}.png")
        Image.fromarray(ids).save(maps[-1])
    out = tmp_path / "generated"
    code, err = _cli(["synthesize", str(synthesize_run), *map(str, maps), "--out", str(out)], capsys)
    assert code == 0, err
    pairs = json.loads((out / "pairs.json").read_text())
    assert [p["name"] for p in pairs["pairs"]] == ["map0", "map1"]
    for k, entry in enumerate(pairs["pairs"]):
        sem = tifffile.imread(out / entry["sem"])
        labels = tifffile.imread(out / entry["labels"])
        ids = np.asarray(Image.open(maps[k]))
        s = card.sem_scale
        assert sem.dtype == np.uint8 and sem.shape == labels.shape == (round(96 * s), round(80 * s))
        assert (sem[labels == card.ignore_index] == 0).all()  # outside stays black
        inside = sem[labels != card.ignore_index]
        assert inside.std() > 0  # an image, not a constant
        assert np.array_equal(np.unique(labels[labels != card.ignore_index]), np.unique(ids[ids != card.ignore_index]))
    # a segment checkpoint is not a generator: one error line, no folder
    code, err = _cli(["synthesize", str(segment_run), str(maps[0]), "--out", str(tmp_path / "nope")], capsys)
    assert code == 2 and err.count("\n") == 1 and "error:" in err and not (tmp_path / "nope").exists()
    # the pairs train a CNN on the same dataset
    assert load_manifest(tiny_dataset).class_names == list(card.class_names)
    run = train(tiny_train_config(tiny_dataset, tmp_path / "runs", **{
        "trainer.max_epochs": 1, "synthetic_pairs": {"path": str(out), "share": 0.5}}))
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished" and record["synthetic_pairs"]["pairs"] == ["map0", "map1"]
