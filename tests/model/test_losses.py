import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib.model.losses import LOSSES, get_loss, inverse_frequency_weights, tempered_softmax

B, C = 8, 5


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, C, generator=g) * 2
    target = torch.randint(0, C, (B,), generator=g)
    return logits, target


def test_focal_gamma0_is_ce(batch):
    logits, target = batch
    got = get_loss("focal", gamma=0.0)(logits, target)
    torch.testing.assert_close(got, F.cross_entropy(logits, target))


def test_focal_per_class_alpha_is_weighted_ce_at_gamma0(batch):
    logits, target = batch
    alpha = [0.5, 1.0, 2.0, 1.5, 0.25]
    got = get_loss("focal", gamma=0.0, alpha=alpha, reduction="none")(logits, target)
    want = F.cross_entropy(logits, target, weight=torch.tensor(alpha), reduction="none")
    torch.testing.assert_close(got, want)


def test_focal_down_weights_easy_examples(batch):
    logits, target = batch
    ce = get_loss("ce", reduction="none")(logits, target)
    focal = get_loss("focal", gamma=2.0, reduction="none")(logits, target)
    p_t = F.softmax(logits, -1).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(focal, (1 - p_t) ** 2 * ce)


def test_bi_tempered_t1_t2_1_is_ce(batch):
    logits, target = batch
    got = get_loss("bi_tempered", t1=1.0, t2=1.0, reduction="none")(logits, target)
    torch.testing.assert_close(got, F.cross_entropy(logits, target, reduction="none"))
    # soft targets: cross-entropy minus the target entropy (a Bregman divergence, 0 at p = y)
    soft = F.softmax(torch.randn(B, C), -1)
    got = get_loss("bi_tempered", t1=1.0, t2=1.0, reduction="none")(logits, soft)
    entropy = -(soft * soft.log()).sum(-1)
    torch.testing.assert_close(got, F.cross_entropy(logits, soft, reduction="none") - entropy)


def test_bi_tempered_matches_reference_values():
    # precomputed values from the authors' tests (google/bi-tempered-loss, tensorflow/loss_test.py)
    x = torch.tensor([[-0.5, 0.1, 2.0], [0.1, 1.5, -5.0], [4.0, -3.0, -6.0]])
    y = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.2, 0.8, 0.0]])
    got = get_loss("bi_tempered", t1=0.5, t2=1.5, reduction="none")(x, y)
    torch.testing.assert_close(got, torch.tensor([0.02301914, 0.18972909, 0.93874922]), atol=1e-5, rtol=0)
    torch.testing.assert_close(tempered_softmax(x, 4.0), torch.tensor(
        [[0.3205458, 0.32714278, 0.3523402], [0.3430056, 0.36491093, 0.29220778],
         [0.41369352, 0.30534995, 0.28299212]]), atol=1e-5, rtol=0)
    got = get_loss("bi_tempered", t1=0.7, t2=1.3)(x[:1], torch.tensor([[0.2, 0.5, 0.3]]))
    torch.testing.assert_close(got, torch.tensor(0.26295574), atol=1e-5, rtol=0)


@pytest.mark.parametrize("t", [1.2, 1.5, 2.0])
def test_tempered_softmax_rows_sum_to_one(t):
    p = tempered_softmax(torch.randn(16, 10) * 3, t, num_iters=20)
    torch.testing.assert_close(p.sum(-1), torch.ones(16), atol=1e-4, rtol=0)
    assert (p > 0).all()


def test_asymmetric_without_focusing_is_one_vs_all_bce(batch):
    logits, target = batch
    got = get_loss("asymmetric", gamma_pos=0.0, gamma_neg=0.0, clip=0.0, reduction="none")(logits, target)
    want = F.binary_cross_entropy_with_logits(logits, F.one_hot(target, C).float(), reduction="none").sum(-1)
    torch.testing.assert_close(got, want)


def test_asymmetric_clip_discards_easy_negatives():
    logits = torch.tensor([[5.0, -6.0, -7.0]])  # negatives have p < 0.05
    loss = get_loss("asymmetric", gamma_pos=0.0, gamma_neg=4.0, clip=0.05, reduction="none")
    torch.testing.assert_close(loss(logits, torch.tensor([0])), -F.logsigmoid(logits[:, 0]))


@pytest.mark.parametrize("name", ["ce", "focal", "soft_ce"])
@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_label_smoothing_matches_torch(batch, name, eps):
    logits, target = batch
    kwargs = {} if name == "soft_ce" else {"label_smoothing": eps}
    if name == "focal":
        kwargs["gamma"] = 0.0
    loss = get_loss(name, **kwargs)
    onehot = F.one_hot(target, C).float()
    if name == "soft_ce":  # no smoothing argument: smoothing is in the soft target itself
        smoothed = onehot * (1 - eps) + eps / C
        torch.testing.assert_close(loss(logits, smoothed), F.cross_entropy(logits, target, label_smoothing=eps))
        return
    want = F.cross_entropy(logits, target, label_smoothing=eps)
    torch.testing.assert_close(loss(logits, target), want)
    torch.testing.assert_close(loss(logits, onehot), want)
    torch.testing.assert_close(want, F.cross_entropy(logits, onehot, label_smoothing=eps))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_onehot_soft_target_equals_index_target(batch, name):
    logits, target = batch
    loss = get_loss(name, reduction="none")
    torch.testing.assert_close(loss(logits, target), loss(logits, F.one_hot(target, C).float()))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_reductions(batch, name):
    logits, target = batch
    loss = get_loss(name, reduction="none")
    per_sample = loss(logits, target)
    assert per_sample.shape == (B,) and (per_sample >= 0).all()
    loss.reduction = "sum"  # read at call time, as fastai's NoneReduce needs
    torch.testing.assert_close(loss(logits, target), per_sample.sum())
    loss.reduction = "mean"
    torch.testing.assert_close(loss(logits, target), per_sample.mean())
    loss.reduction = "avg"
    with pytest.raises(ValueError, match="reduction"):
        loss(logits, target)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("soft", [False, True])
def test_finite_on_extreme_logits(name, soft):
    g = torch.Generator().manual_seed(1)
    logits = (torch.randint(0, 2, (B, C), generator=g).float() * 2 - 1) * 1e4
    logits[0] = 0.0
    logits[1, :] = -1e4
    logits[1, 0] = 1e4
    logits.requires_grad_(True)
    target = torch.randint(0, C, (B,), generator=g)
    target[1] = 1  # confidently wrong
    if soft:
        target = F.softmax(torch.randn(B, C, generator=g), -1)
    out = get_loss(name)(logits, target)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_activation_and_decodes(batch, name):
    logits, _ = batch
    loss = get_loss(name)
    probs = loss.activation(logits)
    torch.testing.assert_close(probs.sum(-1), torch.ones(B))
    assert torch.equal(loss.decodes(probs), logits.argmax(-1))
    assert loss.y_int is True


def test_bad_target_shape_is_clear(batch):
    logits, target = batch
    with pytest.raises(ValueError, match="soft target"):
        get_loss("ce")(logits, torch.rand(B, C + 1))
    with pytest.raises(ValueError, match="class-index target"):
        get_loss("focal")(logits, target[:3])


def test_get_loss_unknown_lists_names():
    with pytest.raises(ValueError) as e:
        get_loss("nope")
    for name in LOSSES:
        assert name in str(e.value)
    with pytest.raises(TypeError, match="gamma"):
        get_loss("focal", gama=2.0)


def test_inverse_frequency_weights():
    w = inverse_frequency_weights(np.array([10, 20, 40, 10]))
    assert w.dtype == torch.float32 and w.shape == (4,)
    torch.testing.assert_close(w.mean(), torch.tensor(1.0))
    torch.testing.assert_close(w[0] / w[1], torch.tensor(2.0))
    with pytest.raises(ValueError, match=r"classes \[1\]"):
        inverse_frequency_weights([3, 0, 2])


def test_weighted_ce(batch):
    logits, target = batch
    w = inverse_frequency_weights([1, 2, 3, 4, 5])
    loss = get_loss("ce", weight=w, reduction="none")
    torch.testing.assert_close(loss(logits, target), F.cross_entropy(logits, target, weight=w, reduction="none"))
    with pytest.raises(ValueError, match="weight has 3"):
        get_loss("ce", weight=[1.0, 1.0, 1.0])(logits, target)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_fastai_mixup_step(name):
    from fastai.callback.mixup import MixUp
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.layers import NoneReduce
    from fastai.learner import Learner
    from fastai.optimizer import SGD

    torch.manual_seed(0)
    xs, ys = torch.randn(32, 3, 4, 4), torch.randint(0, C, (32,))
    items = list(zip(xs, ys))
    dls = DataLoaders(DataLoader(items[:24], bs=8, shuffle=True, drop_last=True), DataLoader(items[24:], bs=8))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, C))
    before = model[1].weight.detach().clone()
    loss = get_loss(name)
    with NoneReduce(loss) as lf:  # the path MixUp takes: per-sample losses are mixed
        assert lf(torch.randn(4, C), torch.randint(0, C, (4,))).shape == (4,)
    assert loss.reduction == "mean"

    learn = Learner(dls, model, loss_func=loss, opt_func=SGD, lr=0.1, cbs=MixUp(0.4))
    with learn.no_logging():
        learn.fit(1)
    assert learn.loss_func is loss and loss.reduction == "mean"
    assert len(learn.recorder.losses) == 3 and all(torch.isfinite(batch_loss) for batch_loss in learn.recorder.losses)
    assert not torch.equal(before, model[1].weight)
    probs, targs = learn.get_preds()
    assert probs.shape == (8, C)
    torch.testing.assert_close(probs.sum(-1), torch.ones(8))
