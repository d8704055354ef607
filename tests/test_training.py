"""Tests for transfer_utils.training: fit learns, History, early stopping, errors, determinism."""

import numpy as np
import pytest
import torch

import transfer_utils as tu


def _loaders(ds, seed=0):
    return tu.make_loader(ds, 32, shuffle=True, seed=seed), tu.make_loader(ds, 64)


def test_fit_learns_and_records_history(toy_images):
    tu.seed_everything(0)
    net = tu.SmallCNN(num_classes=4, widths=(8, 16))
    train, val = _loaders(toy_images)
    before = tu.evaluate(net, val)["accuracy"]
    hist = tu.fit(net, train, epochs=5, val_loader=val, lr=1e-2, progress=False)
    assert hist.epochs == 5 and len(hist.val_acc) == 5 and len(hist.epoch_time) == 5
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert tu.evaluate(net, val)["accuracy"] > max(before, 0.9)
    assert "5 epochs" in repr(hist) and set(hist.as_dict()) >= {"train_loss", "val_acc"}


def test_fit_without_validation_has_no_val_entries(toy_images):
    hist = tu.fit(tu.MLP(64, (16,), 4), _loaders(toy_images)[0], epochs=1, progress=False)
    assert hist.val_loss == [] and hist.val_acc == [] and hist.best_epoch is None


def test_same_seed_same_numbers_on_cpu(toy_images):
    def run():
        tu.seed_everything(1)
        net = tu.SmallCNN(num_classes=4, widths=(8,))
        return tu.fit(net, _loaders(toy_images, 1)[0], epochs=2, device="cpu",
                      progress=False).train_loss

    assert run() == run()


def test_early_stopping_stops_and_restores_best(toy_images):
    tu.seed_everything(0)
    net = tu.MLP(64, (32,), 4)
    train = _loaders(toy_images)[0]
    # validation labels are shifted: the better the model learns, the worse validation gets
    wrong = tu.ArrayDataset(toy_images.x, (toy_images.y + 1) % 4)
    val = tu.make_loader(wrong, 64)
    seen = []
    hist = tu.fit(net, train, epochs=30, val_loader=val, lr=1e-2, early_stopping=2,
                  progress=False, on_epoch_end=lambda e, m, h: seen.append(e))
    assert hist.stopped_early and hist.epochs < 30
    assert seen == list(range(1, hist.epochs + 1))
    assert hist.best_epoch == hist.epochs - 2
    assert tu.evaluate(net, val)["loss"] == pytest.approx(min(hist.val_loss), rel=1e-5)


def test_early_stopping_needs_validation(toy_images):
    with pytest.raises(ValueError, match="early_stopping needs a val_loader"):
        tu.fit(tu.MLP(64), _loaders(toy_images)[0], epochs=1, early_stopping=2)


def test_non_finite_loss_names_epoch_and_batch(toy_images):
    bad = tu.ArrayDataset(toy_images.x.clone(), toy_images.y)
    bad.x[40] = float("nan")
    loader = tu.make_loader(bad, 32)
    with pytest.raises(FloatingPointError, match="epoch 1, batch 2"):
        tu.fit(tu.MLP(64, (8,), 4), loader, epochs=1, progress=False)


@pytest.mark.parametrize("epochs", [0, -1, 1.5, True])
def test_bad_epochs(toy_images, epochs):
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        tu.fit(tu.MLP(64), _loaders(toy_images)[0], epochs=epochs)


def test_bad_loader_and_frozen_model(toy_images):
    with pytest.raises(TypeError, match="iterable of \\(inputs, targets\\)"):
        tu.fit(tu.MLP(64), None, epochs=1)
    with pytest.raises(ValueError, match="empty"):
        tu.fit(tu.MLP(64), [], epochs=1)
    with pytest.raises(ValueError, match="no trainable parameters"):
        tu.fit(tu.freeze(tu.MLP(64)), _loaders(toy_images)[0], epochs=1)


def test_penalty_and_custom_optimizer_are_used(toy_images):
    net = tu.MLP(64, (8,), 4)
    calls = []

    def penalty(model):
        calls.append(1)
        return 0.0 * sum(p.sum() for p in model.parameters())

    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    w = net.head.weight.clone()
    tu.fit(net, _loaders(toy_images)[0], epochs=1, optimizer=opt, penalty=penalty, progress=False)
    assert len(calls) == len(_loaders(toy_images)[0])
    assert torch.equal(w, net.head.weight)  # lr 0: the given optimizer was the one used


def test_progress_bar_can_be_on(toy_images, capsys):
    tu.fit(tu.MLP(64, (8,), 4), _loaders(toy_images)[0], epochs=1, progress=True)
    assert "fit" in capsys.readouterr().err


def test_evaluate_and_predict_restore_mode(toy_images):
    net = tu.MLP(64, (8,), 4).train()
    m = tu.evaluate(net, tu.make_loader(toy_images, 50))
    assert set(m) == {"loss", "accuracy", "n"} and m["n"] == 200 and 0 <= m["accuracy"] <= 1
    assert net.training
    logits, y = tu.predict(net.eval(), tu.make_loader(toy_images, 50))
    assert logits.shape == (200, 4) and torch.equal(y, toy_images.y) and not net.training


# --------------------------------------------------------------------------- bad batches, Ctrl-C


def test_integer_labels_of_any_width_become_int64_and_float_labels_are_refused(toy_images):
    x, y = toy_images.x[:32], toy_images.y[:32]
    net = tu.SmallCNN(num_classes=4, widths=(4,))
    hist = tu.fit(net, [(x, y.to(torch.int32))], epochs=1, progress=False)
    assert hist.steps == 1
    with pytest.raises(TypeError, match="labels must be integer class ids, got dtype float32"):
        tu.fit(net, [(x, y.float())], epochs=1, progress=False)
    # a custom loss may take float targets (soft labels, regression)
    soft = torch.nn.functional.one_hot(y, 4).float()
    tu.fit(net, [(x, soft)], epochs=1, progress=False,
           loss_fn=lambda logits, t: torch.nn.functional.cross_entropy(logits, t))


def test_a_non_finite_gradient_is_caught_before_the_step(toy_images):
    class NaNGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * float("nan")

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    model.forward = lambda x, m=model: NaNGrad.apply(m[1](m[0](x)))  # finite loss, NaN grads
    before = model[1].weight.detach().clone()
    with pytest.raises(FloatingPointError, match="non-finite gradient at epoch 1, batch 1"):
        tu.fit(model, tu.make_loader(toy_images, 32), epochs=1, progress=False)
    assert torch.equal(before, model[1].weight)  # the step was not taken


def test_ctrl_c_keeps_the_best_weights_and_the_history(toy_images):
    tu.seed_everything(0)
    net = tu.MLP(64, (16,), 4)
    train, val = tu.make_loader(toy_images, 32, shuffle=True), tu.make_loader(toy_images, 64)
    snapshots = {}

    def stop_at_epoch_3(epoch, model, history):
        snapshots[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(tu.TrainingInterrupted, match="history so far is the exception's"
                       ) as info:
        tu.fit(net, train, epochs=10, val_loader=val, lr=1e-2, progress=False,
               on_epoch_end=stop_at_epoch_3)
    hist = info.value.history
    assert isinstance(info.value, KeyboardInterrupt) and hist.interrupted
    assert hist.epochs == 3 and len(hist.val_loss) == 3
    best = hist.best_epoch
    assert best == 1 + int(np.argmin(hist.val_loss))
    assert all(torch.equal(v, snapshots[best][k]) for k, v in net.state_dict().items())
    assert f"best epoch so far ({best})" in str(info.value)


def test_the_progress_bar_moves_per_batch(toy_images, capsys):
    loader = tu.make_loader(toy_images, 10)  # 20 batches per epoch
    tu.fit(tu.MLP(64, (8,), 4), loader, epochs=1, progress=True)
    err = capsys.readouterr().err
    assert "20/20" in err and "batch" in err


def test_an_epoch_without_batches_is_an_error_not_a_division_by_zero():
    empty = tu.ArrayDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0))
    with pytest.raises(ValueError, match="empty"):
        tu.fit(tu.MLP(64), tu.make_loader(empty), epochs=1)
    gen = (b for b in [(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]))])
    with pytest.raises(ValueError, match="yielded no batch in epoch 2"):
        tu.fit(tu.MLP(64), gen, epochs=2, progress=False)


def test_fit_by_steps_stops_part_way_through_an_epoch(toy_images):
    loader = tu.make_loader(toy_images, 32, shuffle=True)  # 7 batches per epoch
    hist = tu.fit(tu.MLP(64, (8,), 4), loader, steps=10, progress=False)
    assert hist.steps == 10 and hist.epochs == 2


def test_fit_with_seed_is_reproducible(toy_images):
    def run():
        net = tu.MLP(64, (8,), 4)
        return tu.fit(net, tu.make_loader(toy_images, 32, shuffle=True), steps=5, seed=3,
                      progress=False).train_loss

    torch.manual_seed(0)
    first = run()  # the model is built before fit seeds; the training itself is seeded
    torch.manual_seed(0)
    assert run() == first
