"""Tests for transfer_utils.distill: the KD loss contract (with properties) and the loop."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import transfer_utils as tu


def _direct(s, t, y, T, alpha):
    """The contract written out by hand: alpha T^2 KL(p_t || p_s) + (1 - alpha) CE."""
    p_t = torch.softmax(t / T, 1)
    log_p_s = torch.log_softmax(s / T, 1)
    kl = (p_t * (torch.log(p_t) - log_p_s)).sum(1).mean()
    out = alpha * T * T * kl
    if y is not None:
        out = out + (1 - alpha) * F.cross_entropy(s, y)
    return out


logits = st.integers(1, 6).flatmap(
    lambda b: st.integers(2, 8).map(lambda c: (b, c)))


@settings(max_examples=40, deadline=None)
@given(shape=logits, seed=st.integers(0, 10_000), T=st.floats(0.5, 20), alpha=st.floats(0, 1))
def test_kd_loss_matches_direct_formula(shape, seed, T, alpha):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(*shape, generator=g, dtype=torch.float64) * 3
    t = torch.randn(*shape, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, shape[1], (shape[0],), generator=g)
    for target in (y, None):
        got = tu.kd_loss(s, t, target, temperature=T, alpha=alpha)
        assert torch.allclose(got, _direct(s, t, target, T, alpha), atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(shape=logits, seed=st.integers(0, 10_000), T=st.floats(0.5, 20))
def test_soft_term_zero_for_equal_logits_and_nonnegative(shape, seed, T):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(*shape, generator=g, dtype=torch.float64)
    t = torch.randn(*shape, generator=g, dtype=torch.float64)
    assert tu.kd_loss(s, s, temperature=T, alpha=1.0).abs().item() < 1e-9
    assert tu.kd_loss(s, t, temperature=T, alpha=1.0).item() >= -1e-12


def test_t_squared_keeps_gradient_scale():
    """At high T the gradient of the soft term stays O(1) thanks to T^2 (chapter 5)."""
    g = torch.Generator().manual_seed(0)
    t = torch.randn(64, 10, generator=g, dtype=torch.float64)
    s0 = torch.randn(64, 10, generator=g, dtype=torch.float64)
    norms = []
    for T in (5.0, 50.0):
        s = s0.clone().requires_grad_(True)
        tu.kd_loss(s, t, temperature=T, alpha=1.0).backward()
        norms.append(s.grad.norm().item())
        # the gradient approaches (s - t)/(N C T) scaled by T^2/T^2: logit matching
    assert norms[0] == pytest.approx(norms[1], rel=0.2)
    s = s0.clone().requires_grad_(True)
    (tu.kd_loss(s, t, temperature=50.0, alpha=1.0) / 2500).backward()  # without T^2
    assert s.grad.norm().item() < norms[1] / 1000


def test_kd_loss_errors():
    with pytest.raises(ValueError, match="same shape"):
        tu.kd_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="2-D"):
        tu.kd_loss(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        tu.kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0)
    with pytest.raises(ValueError, match="alpha must be a number in \\[0, 1\\]"):
        tu.kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), alpha=1.5)
    with pytest.raises(ValueError, match="targets must be 1-D"):
        tu.kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))


def test_soften():
    z = torch.tensor([[2.0, 1.0, 0.0]])
    assert torch.allclose(tu.soften(z, 1.0), torch.softmax(z, 1))
    assert tu.soften(z, 10.0).max() < tu.soften(z, 1.0).max()  # flatter at high T
    with pytest.raises(ValueError, match="temperature must be a positive number, got -1"):
        tu.soften(z, -1)
    with pytest.raises(ValueError, match="got inf"):
        tu.soften(z, float("inf"))


def test_distill_moves_student_toward_teacher_and_leaves_teacher(toy_images):
    tu.seed_everything(0)
    teacher = tu.SmallCNN(num_classes=4, widths=(8, 16))
    tu.fit(teacher, tu.make_loader(toy_images, 32, shuffle=True), epochs=4, lr=1e-2,
           progress=False)
    teacher.train().zero_grad(set_to_none=True)
    t_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = tu.MLP(64, (16,), 4)
    loader = tu.make_loader(toy_images, 32, shuffle=True)
    X = toy_images.x

    def gap():
        with torch.no_grad():
            return tu.kd_loss(student(X), teacher.eval()(X), temperature=4, alpha=1.0).item()

    before = gap()
    teacher.train()
    hist = tu.distill(student, teacher, loader, epochs=10, lr=1e-2, use_labels=False,
                      progress=False)
    assert hist.epochs == 10
    assert teacher.training  # mode restored
    assert all(torch.equal(t_state[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    assert gap() < before / 2


def test_distill_rejects_same_model(toy_images):
    net = tu.MLP(64)
    with pytest.raises(ValueError, match="same module"):
        tu.distill(net, net, tu.make_loader(toy_images), epochs=1)
