"""lib.predict.inference: TTA-averaged predictions of a loader, a run re-predicted from its files."""
import numpy as np
import pandas as pd
import pytest
import torch
from shared import PNG_CLASSES as CLASSES
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lib.core.rundir import find_runs
from lib.data.augment import get_augment
from lib.data.dataset import load_resized
from lib.model.backbones import create_backbone, load_weights
from lib.model.forward import predict_loader
from lib.predict.inference import PredictSpec, predict_fold, tta_predictions


def _images(b=4, h=12, w=12, seed=0):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _loader(x, batch_size=3):
    labels = torch.zeros(len(x), dtype=torch.long)
    return DataLoader(TensorDataset(x, labels), batch_size=batch_size)


def _pool_linear(c=5):
    torch.manual_seed(0)
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, c))


def _conv(c=5):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(c))


def test_flip_invariant_model_gives_same_output():
    x, model = _images(b=7), _pool_linear()
    base = predict_loader(model, _loader(x), ["identity"], "cpu", progress=False)
    both = predict_loader(model, _loader(x), ["identity", "hflip"], "cpu", progress=False)
    assert base.shape == (7, 5) and base.dtype == np.float64
    assert np.allclose(base.sum(axis=1), 1.0)
    assert np.allclose(base, both, atol=1e-6)
    with torch.no_grad():
        assert np.allclose(base, torch.softmax(model(x), 1).numpy(), atol=1e-6)


@pytest.mark.parametrize("space", ["prob", "logit"])
def test_conv_model_sees_the_flip_and_averages_in_space(space):
    x, model = _images(b=5), _conv()
    model(x)  # materialise the lazy layer
    model.train()
    base = predict_loader(model, _loader(x), ["identity"], "cpu", progress=False)
    both = predict_loader(model, _loader(x, 2), ["identity", "hflip"], "cpu", space=space,
                       progress=False)
    assert not np.allclose(base, both, atol=1e-4)
    assert model.training  # mode restored
    with torch.no_grad():
        lp = torch.stack([torch.log_softmax(model(x), 1), torch.log_softmax(model(x.flip(-1)), 1)])
    expected = lp.exp().mean(0) if space == "prob" else torch.softmax(lp.mean(0), 1)
    assert np.allclose(both, expected.numpy(), atol=1e-6)


def test_predict_loader_accepts_callables_and_rejects_bad_space():
    x, model = _images(b=3), _pool_linear()
    out = predict_loader(model, _loader(x), [lambda t: t], "cpu", progress=False)
    assert out.shape == (3, 5)
    with pytest.raises(ValueError, match="space"):
        predict_loader(model, _loader(x), ["identity"], "cpu", space="geo", progress=False)


def test_predict_spec_checks_and_normalises_what_it_holds():
    spec = PredictSpec("hflip", "logit", batch_size=8)
    assert spec.ops == ("hflip",) and not spec.plain and PredictSpec(["identity"]).plain and PredictSpec().plain
    assert PredictSpec(["identity", "hflip"]) == PredictSpec(("identity", "hflip"))  # lists and tuples alike
    with pytest.raises(ValueError, match="unknown TTA op 'flip'"):
        PredictSpec(["flip"])
    with pytest.raises(ValueError, match="space"):
        PredictSpec(space="geo")
    with pytest.raises(AttributeError):
        spec.space = "prob"  # frozen: one spec is passed down a chain of calls unchanged


def test_predict_fold_matches_direct_forward_and_keeps_row_order(png_comp, png_run):
    out = predict_fold(png_run, split="test")
    ref = pd.read_csv(png_run / "test.csv", dtype={"id": str})
    assert list(out.columns) == ["id"] + CLASSES and list(out["id"]) == list(ref["id"])
    assert np.allclose(out[CLASSES].sum(axis=1), 1)
    model, cfg = create_backbone("test_resnet", 3)
    load_weights(model, png_run / "model.safetensors").eval()
    tfm = get_augment("none", 16, cfg["mean"], cfg["std"])
    x = torch.stack([tfm(image=load_resized(p, 16))["image"]
                     for p in png_comp.test.set_index("id").loc[ref["id"], "path"]])
    with torch.no_grad():
        want = torch.softmax(model(x), dim=1).double().numpy()
    assert np.allclose(out[CLASSES].to_numpy(), want, atol=1e-6)

    oof = predict_fold(png_run, split="oof")
    ref = pd.read_csv(png_run / "oof.csv", dtype={"id": str})
    assert list(oof["id"]) == list(ref["id"]) and list(oof["target"]) == list(ref["target"])
    assert (oof["fold"] == 0).all()
    with pytest.raises(ValueError, match="unknown TTA op 'flip'"):
        predict_fold(png_run, PredictSpec(["flip"]))


def test_predict_fold_hflip(png_run):
    # symmetric test images: flipping changes nothing, so identity+hflip == identity
    runs = find_runs(png_run.parent)
    tests, oofs = tta_predictions(runs, CLASSES, PredictSpec(["identity", "hflip"]), oof=True)
    plain = predict_fold(png_run, split="test")[CLASSES].to_numpy()
    assert np.allclose(tests["tiny"][CLASSES].to_numpy(), plain, atol=1e-6)
    # ordinary train images: identity+hflip is the mean of the two single-op predictions
    a = predict_fold(png_run, split="oof")
    b = predict_fold(png_run, PredictSpec(["hflip"]), split="oof")[CLASSES].to_numpy()
    ab = oofs["tiny"].set_index("id").loc[a["id"], CLASSES].to_numpy()  # tta_predictions sorts by id
    a = a[CLASSES].to_numpy()
    assert not np.allclose(a, b, atol=1e-4)
    assert np.allclose(ab, (a + b) / 2, atol=1e-6)
    assert oofs["tiny"]["id"].is_monotonic_increasing and len(oofs["tiny"]) == len(a)
    tests, oofs = tta_predictions(runs, CLASSES, PredictSpec(), oof=True)  # plain: the run's test.csv
    assert oofs is None and np.allclose(tests["tiny"][CLASSES].to_numpy(), 1 / 3)


def test_predict_size_feeds_the_model_images_of_that_size(png_comp, png_run):
    model, cfg = create_backbone("test_resnet", 3)
    load_weights(model, png_run / "model.safetensors").eval()
    ref = pd.read_csv(png_run / "oof.csv", dtype={"id": str})
    paths = png_comp.train.set_index("id").loc[ref["id"], "path"]

    def direct(size):
        tfm = get_augment("none", size, cfg["mean"], cfg["std"])
        x = torch.stack([tfm(image=load_resized(p, size))["image"] for p in paths])
        with torch.no_grad():
            return torch.softmax(model(x), dim=1).double().numpy()

    big = predict_fold(png_run, PredictSpec(size=24), split="oof")
    assert list(big["id"]) == list(ref["id"])
    assert np.allclose(big[CLASSES].to_numpy(), direct(24), atol=1e-6)          # decoded and resized at 24 px
    assert not np.allclose(big[CLASSES].to_numpy(), direct(16), atol=1e-4)      # not the trained size's
    own = predict_fold(png_run, PredictSpec(size=16), split="oof")             # its own size: plain
    assert np.allclose(own[CLASSES].to_numpy(), predict_fold(png_run, split="oof")[CLASSES].to_numpy())
    assert not PredictSpec(size=24).plain and PredictSpec().plain
    with pytest.warns(UserWarning, match="at 24 px on test only"):            # test re-predicted, OOF not
        tests, _ = tta_predictions(find_runs(png_run.parent), CLASSES, PredictSpec(size=24))
    assert not np.allclose(tests["tiny"][CLASSES].to_numpy(), 1 / 3)           # not the run's test.csv
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="the pixels to predict at"):
            PredictSpec(size=bad)
