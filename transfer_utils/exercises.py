"""Every exercise grader of the book (``tu.check_*``): one success style, one hint style.

Present layer. Each grader calls the reader's function on cases with known
answers. On success it prints one line that starts with ``Correct:``; otherwise it
raises ``AssertionError`` whose message says what was wrong and ends with
``Hint: ...`` (what to change). The chapter that poses each exercise is named in
its docstring.
"""

from __future__ import annotations

import copy
import functools
import math
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .adapt import coral_loss
from .analysis import summarize
from .data import ArrayDataset, make_loader
from .diagnostics import leep
from .distill import kd_loss
from .distributed import rank_batches
from .guide import GUIDE_METHODS, GUIDE_SCENARIOS, normalise_method
from .models import SmallCNN, head_name
from .param_efficient import LoRALinear
from .surgery import has_prefix

__all__ = ["check_ci95", "check_attribute_map", "check_param_groups", "check_extract_features",
           "check_kd_loss", "check_adapt_first_conv", "check_safe_loader",
           "check_decision_guide", "check_leep", "check_rank_batches", "check_coral_loss",
           "check_lora_forward", "check_lora_merge"]


def _wrong(problem: str, hint: str) -> AssertionError:
    return AssertionError(f"{problem}\nHint: {hint}")


def _styled(message: str, hint: str) -> str:
    """``"<what is wrong>\nHint: <what to do>"``, the one hint style of every grader."""
    if "Hint:" in message:
        problem, given = message.split("Hint:", 1)
        problem = problem.strip().rstrip(".") or "not right yet"
        return f"{problem}\nHint: {given.strip()}"
    return f"{message.strip()}\nHint: {hint}"


def _grader(hint: str):
    """Give a grader the book's one style: ``Correct: ...`` printed, or a ``Hint:`` raised.

    The decorated function returns its success message, or raises
    ``AssertionError`` saying what is wrong (with its own ``Hint:`` when it has a
    specific one; ``hint`` otherwise).
    """
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                message = fn(*args, **kwargs)
            except AssertionError as err:
                raise AssertionError(_styled(str(err), hint)) from err.__cause__
            print(f"Correct: {message}")

        return run

    return wrap




@_grader('compare with the LEEP formula of chapter 7 (the joint P(y, z), then P(y | z))')
def check_leep(fn: Callable) -> None:
    """Check a reader's LEEP implementation ``fn(source_probs, labels) -> float`` (chapter 7).

    Compares it with :func:`leep` on a few cases (a perfect source, an
    uninformative one, random ones). Prints a message when it passes; raises
    ``AssertionError`` with a hint when it does not.
    """
    g = torch.Generator().manual_seed(0)
    cases = [
        ("a source that predicts the target perfectly",
         torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])], torch.tensor([0, 1, 2, 0, 1, 2])),
        ("an uninformative source (uniform predictions)",
         torch.full((8, 4), 0.25), torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])),
    ]
    for n, z, k in ((20, 5, 3), (50, 10, 4)):
        probs = torch.softmax(2 * torch.randn(n, z, generator=g), 1)
        cases.append((f"random source outputs ({n} examples, {z} source classes, {k} target "
                      "classes)", probs, torch.arange(n) % k))
    for what, probs, y in cases:
        want = leep(probs, y)
        try:
            got = fn(probs.clone(), y.clone())
        except Exception as e:  # noqa: BLE001 - report any failure to the reader
            raise AssertionError(f"your function raised {type(e).__name__}: {e} on {what}") from e
        got = float(got)
        if not math.isfinite(got) or abs(got - want) > 1e-4:
            hint = ("Hint: build the joint P(y, z) as one_hot(y).T @ probs / n, divide each "
                    "column by P(z) = its sum to get P(y | z), then average "
                    "log(sum_z P(y_i | z) probs[i, z]) over the examples.")
            if math.isfinite(got) and abs(got - want * len(y)) < 1e-3 * max(1, abs(want * len(y))):
                hint = "Hint: LEEP is the mean over examples, not the sum."
            raise AssertionError(f"on {what} LEEP should be {want:.5f} but your function "
                                 f"returned {got:.5f}. {hint}")
    return f"your LEEP matches the reference on all {len(cases)} cases."


@_grader("reread chapter 8's decision guide: labels per class, similarity, compute")
def check_decision_guide(answers: Mapping[str, str]) -> None:
    """Exercise checker (chapter 8): your first method for each of :data:`GUIDE_SCENARIOS`.

    ``answers`` maps each scenario name to a method: one of :data:`GUIDE_METHODS`,
    followed by ``", then distil"`` when the deployed model must be small. Every
    defensible answer passes (a scenario's ``acceptable`` methods, the guide's among
    them), and the message says where an answer differs from the rule of thumb;
    an answer that cannot be defended raises ``AssertionError`` with the reason.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.check_decision_guide({s.name: s.recommend() for s in tu.GUIDE_SCENARIOS})
    Correct: all 6 answers are defensible, and all match the rule of thumb.
    """
    if not isinstance(answers, Mapping):
        raise TypeError(f"answers must be a dict {{scenario name: method}}, got "
                        f"{type(answers).__name__}")
    names = [s.name for s in GUIDE_SCENARIOS]
    missing = [n for n in names if n not in answers]
    if missing:
        raise AssertionError(f"no answer for scenarios {missing}\nHint: answer all of {names}")
    unknown = sorted(set(answers) - set(names))
    if unknown:
        raise AssertionError(f"unknown scenario names {unknown}\nHint: the scenarios are "
                             f"{names}")
    differ = []
    for s in GUIDE_SCENARIOS:
        got = normalise_method(answers[s.name])
        base = got.split(",")[0].strip()
        if base not in GUIDE_METHODS or got not in (base, f"{base}, then distil"):
            raise AssertionError(f"{s.name}: {answers[s.name]!r} is not one of {GUIDE_METHODS}"
                                 "\nHint: optionally followed by ', then distil'")
        if got in s.acceptable:
            if got != s.recommend():
                differ.append(f"{s.name} ({got}; the rule of thumb says {s.recommend()})")
            continue
        if s.small_model != got.endswith("then distil"):
            hint = s.why if s.small_model else (
                "nothing asks for a smaller deployed model here, so no distillation step")
        else:
            hint = s.why
        raise AssertionError(f"{s.name}: {answers[s.name]!r} is hard to defend as the first "
                             f"try (defensible: {', '.join(s.acceptable)})\nHint: {hint}")
    if differ:
        return (f"all {len(names)} answers are defensible; where they differ from the rule of "
                f"thumb: {'; '.join(differ)}.")
    return f"all {len(names)} answers are defensible, and all match the rule of thumb."


def _conv_mistakes(conv: nn.Conv2d, x: torch.Tensor, in_channels: int) -> dict[str, torch.Tensor]:
    """Outputs of the usual wrong first-conv adaptations, for the checker's hints."""
    import torch.nn.functional as F

    w, b = conv.weight.detach(), conv.bias
    kw = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation)

    def out(weight, bias=b, **over):
        return F.conv2d(x, weight.expand(-1, in_channels, -1, -1), bias, **{**kw, **over})

    return {  # checked in this order: with one old channel, the mean equals the sum
        "every new channel got the full sum, so the response is in_channels times too large; "
        "divide the summed filter by the new channel count": out(w.sum(1, keepdim=True)),
        "you averaged the filters: the response is old_channels/new_channels times too small; "
        "sum them (and divide by the new channel count)": out(w.mean(1, keepdim=True)),
        "you kept only the first input channel's filter; combine all of them":
            out(w[:, :1]),
        "the bias is missing; copy it from the old layer": out(
            w.sum(1, keepdim=True) / in_channels, bias=None),
        "stride, padding or dilation differ from the old layer; copy them": out(
            w.sum(1, keepdim=True) / in_channels, stride=1, padding=0, dilation=1),
    }


@_grader('a grey image copied into every channel must give the old response')
def check_adapt_first_conv(fn: Callable[[nn.Conv2d, int], nn.Conv2d], *, seed: int = 0) -> None:
    """Exercise checker (chapter 6): does ``fn(conv, in_channels)`` adapt a first conv correctly?

    ``fn`` gets a ``Conv2d`` and a channel count and must return a *new* ``Conv2d``
    with that many input channels whose response to an image with equal channels
    (e.g. a grey image copied into RGB) is the old layer's response, both for
    3 -> 1 and 1 -> 3 channels, with stride, padding and bias kept and the old
    layer left unchanged. Prints a pass message or raises ``AssertionError`` with
    a hint.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.check_adapt_first_conv(tu.adapt_first_conv)
    Correct: 4 layers adapted (3->1 and 1->3 channels), responses to grey images unchanged.
    """
    if not callable(fn):
        raise TypeError(f"check_adapt_first_conv needs a function, got {type(fn).__name__}")
    g = torch.Generator().manual_seed(seed)
    cases = [(3, 1, dict(kernel_size=7, stride=2, padding=3, bias=False)),
             (3, 1, dict(kernel_size=3, stride=1, padding=1, bias=True)),
             (1, 3, dict(kernel_size=3, stride=1, padding=1, bias=True)),
             (3, 2, dict(kernel_size=5, stride=2, padding=0, bias=True))]
    for old_c, new_c, kw in cases:
        conv = nn.Conv2d(old_c, 8, **kw)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
            if conv.bias is not None:
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=g))
        original = copy.deepcopy(conv)
        grey = torch.rand(2, 1, 16, 16, generator=g)
        what = f"a Conv2d({old_c}, 8, {kw}) adapted to {new_c} channels"
        try:
            new = fn(conv, new_c)
        except Exception as err:
            raise AssertionError(f"your function raised {type(err).__name__}: {err} (on {what})"
                                 ) from err
        if not isinstance(new, nn.Conv2d):
            raise AssertionError(f"return an nn.Conv2d, got {type(new).__name__} ({what})")
        if not (torch.equal(conv.weight, original.weight)
                and (conv.bias is None or torch.equal(conv.bias, original.bias))):
            raise AssertionError(f"the old layer was changed in place ({what}); build a new "
                                 "nn.Conv2d and copy the combined weights into it")
        if new.in_channels != new_c or new.weight.shape[1] != new_c:
            raise AssertionError(f"the new layer has {new.weight.shape[1]} input channels, "
                                 f"expected {new_c} ({what})")
        if new.out_channels != 8:
            raise AssertionError(f"keep the number of output channels (8), got "
                                 f"{new.out_channels} ({what})")
        with torch.no_grad():
            want = conv(grey.expand(-1, old_c, -1, -1))
            try:
                got = new(grey.expand(-1, new_c, -1, -1))
            except Exception as err:
                raise AssertionError(f"the new layer fails on a [2, {new_c}, 16, 16] input: "
                                     f"{err} ({what})") from err
            if got.shape == want.shape and torch.allclose(got, want, atol=1e-4, rtol=1e-4):
                continue
            hint = "a grey image copied into every channel must give the old response"
            for msg, wrong in _conv_mistakes(conv, grey.expand(-1, new_c, -1, -1), new_c).items():
                if wrong.shape == got.shape and torch.allclose(got, wrong, atol=1e-4, rtol=1e-4):
                    hint = msg
                    break
            else:
                if got.shape != want.shape:
                    hint = (f"the output has shape {list(got.shape)} instead of "
                            f"{list(want.shape)}: copy stride, padding and dilation")
        raise AssertionError(f"wrong response for {what}. Hint: {hint}")
    return (f"{len(cases)} layers adapted (3->1 and 1->3 channels), responses to grey "
          "images unchanged.")


class _MarkerPayload:
    """Harmless stand-in for malicious pickled code: unpickling it writes a marker file."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __reduce__(self):
        return (Path.write_text, (self.path, "written by code inside a checkpoint\n"))


@_grader('load .safetensors with safetensors, .pt with torch.load(path, weights_only=True)')
def check_safe_loader(fn: Callable[[str, nn.Module], object]) -> None:
    """Exercise checker (chapter 6): does ``fn(path, model)`` load weights without running code?

    Gives ``fn`` three files in a temporary folder: a plain ``.pt`` state dict, a
    ``.safetensors`` file, and a ``.pt`` state dict that also holds a harmless
    payload which writes a marker file when unpickled. ``fn`` must load the first
    two into ``model`` and *raise* on the third without the payload running.
    Prints a pass message or raises ``AssertionError`` with a hint.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.check_safe_loader(lambda path, model: tu.load_checkpoint(path, model))
    Correct: both clean checkpoints loaded, and the booby-trapped one was refused before its code ran.
    """
    from safetensors.torch import save_file

    if not callable(fn):
        raise TypeError(f"check_safe_loader needs a function, got {type(fn).__name__}")
    torch.manual_seed(0)
    source = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    state = {k: v.clone() for k, v in source.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        marker = tmp / "payload_ran.txt"
        torch.save(state, tmp / "clean.pt")
        save_file(state, str(tmp / "clean.safetensors"))
        torch.save({**state, "extra": _MarkerPayload(marker)}, tmp / "trapped.pt")
        for name in ("clean.pt", "clean.safetensors"):
            model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
            try:
                fn(str(tmp / name), model)
            except Exception as err:
                raise AssertionError(
                    f"your loader raised {type(err).__name__} on a clean file {name}: {err}. "
                    "Hint: .safetensors files need safetensors (or tu.load_checkpoint), .pt files "
                    "torch.load(path, weights_only=True)"
                ) from err
            same = all(torch.equal(model.state_dict()[k], state[k]) for k in state)
            if not same:
                raise AssertionError(f"after fn({name!r}, model) the model does not hold the "
                                     "file's weights; call model.load_state_dict(...) on what "
                                     "you loaded")
        model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        raised = None
        try:
            fn(str(tmp / "trapped.pt"), model)
        except Exception as err:
            raised = err
        if marker.exists():
            raise AssertionError(
                "the payload ran: loading trapped.pt executed code hidden in the file (here it "
                "only wrote a marker file; an attacker's could do anything). Hint: never "
                "torch.load(..., weights_only=False) a file you do not trust; use "
                "torch.load(path, weights_only=True) or tu.load_checkpoint"
            )
        if raised is None:
            raise AssertionError(
                "trapped.pt was loaded without an error: a file holding more than tensors must be "
                "refused loudly (raise), not half-loaded or skipped in silence"
            )
    return ("both clean checkpoints loaded, and the booby-trapped one was refused before "
          "its code ran.")


@_grader("one group for the body and one for the head, each with its own 'lr'")
def check_param_groups(groups, model: nn.Module, *, ratio: float = 10.0) -> None:
    """Check the exercise "write the parameter groups so the head learns 10x faster".

    Passes when ``groups`` (a list of dicts with ``"params"`` and ``"lr"``, as an
    optimizer takes them) holds every trainable parameter of ``model`` exactly
    once, every body parameter has one learning rate, every head parameter has
    one learning rate, and the head's is ``ratio`` times the body's. Prints a
    short confirmation; raises ``AssertionError`` with a hint otherwise.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> net = tu.SmallCNN()
    >>> tu.check_param_groups([{"params": net.body.parameters(), "lr": 1e-4},
    ...                        {"params": net.head.parameters(), "lr": 1e-3}], net)
    Correct: the head learns 10x faster than the body (head 0.001, body 0.0001).
    """
    head = head_name(model)
    if isinstance(groups, torch.optim.Optimizer):
        groups = groups.param_groups
    if isinstance(groups, Mapping) or not isinstance(groups, (list, tuple)):
        raise AssertionError(
            "Hint: give a list of dicts, one per group, e.g. "
            "[{'params': model.body.parameters(), 'lr': ...}, "
            "{'params': model.head.parameters(), 'lr': ...}]"
        )
    lr_of: dict[int, float] = {}
    for i, g in enumerate(groups):
        if not isinstance(g, Mapping) or "params" not in g:
            raise AssertionError(f"Hint: group {i} must be a dict with a 'params' entry")
        if "lr" not in g:
            raise AssertionError(
                f"Hint: group {i} has no 'lr'; give each group its own learning rate"
            )
        params = g["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        for p in params:
            if id(p) in lr_of:
                raise AssertionError(
                    "Hint: a parameter appears in two groups; each parameter belongs to exactly "
                    "one group (the optimizer would refuse this list)"
                )
            lr_of[id(p)] = float(g["lr"])
    names = {id(p): n for n, p in model.named_parameters()}
    foreign = [i for i in lr_of if i not in names]
    if foreign:
        raise AssertionError(
            "Hint: the groups hold parameters that are not the model's; take them from the "
            "model you pass (model.body.parameters(), model.head.parameters())"
        )
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in lr_of]
    if missing:
        raise AssertionError(
            f"Hint: {len(missing)} trainable parameters are in no group (e.g. {missing[:2]}): "
            "the optimizer would never update them"
        )
    body_lrs = {lr for i, lr in lr_of.items() if not has_prefix(names[i], head)}
    head_lrs = {lr for i, lr in lr_of.items() if has_prefix(names[i], head)}
    if not head_lrs or not body_lrs:
        raise AssertionError("Hint: give the body and the head each a group")
    if len(body_lrs) > 1 or len(head_lrs) > 1:
        raise AssertionError(
            f"Hint: use one rate for the whole body and one for the head; got body rates "
            f"{sorted(body_lrs)} and head rates {sorted(head_lrs)}"
        )
    body_lr, head_lr = body_lrs.pop(), head_lrs.pop()
    if head_lr == body_lr:
        raise AssertionError(
            f"Hint: the body and the head both learn at {head_lr:g}; the new head should "
            f"learn {ratio:g}x faster than the pretrained body (e.g. body {head_lr / ratio:g})"
        )
    if body_lr <= 0:
        raise AssertionError(
            "Hint: a body rate of 0 freezes the body; the exercise asks for a smaller rate, "
            "not none"
        )
    if head_lr < body_lr:
        raise AssertionError(
            f"Hint: the rates are the wrong way round (body {body_lr:g}, head {head_lr:g}): "
            "the pretrained body gets the smaller rate"
        )
    if not np.isclose(head_lr / body_lr, ratio, rtol=1e-6):
        raise AssertionError(
            f"Hint: the head learns {head_lr / body_lr:g}x faster than the body; the exercise "
            f"asks for {ratio:g}x"
        )
    return (f"the head learns {ratio:g}x faster than the body "
          f"(head {head_lr:g}, body {body_lr:g}).")



@_grader("eval mode, torch.no_grad(), and the caller's mode restored in a finally block")
def check_extract_features(fn: Callable) -> None:
    """Check a reader's ``fn(model, loader) -> (X, y)`` (chapter 4's first exercise).

    It must return the features and labels of every batch, computed as at test
    time (``model.eval()``: dropout off, BatchNorm on its running statistics,
    which must not change), without building a gradient graph
    (``torch.no_grad()``), and leave the model in the mode it found it, even when
    the loader raises an error half-way.

    Prints a short message when all checks pass; raises ``AssertionError`` with a
    hint otherwise.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.check_extract_features(tu.extract_features)
    Correct: extract_features: eval mode, no gradients, labels kept, caller's mode restored.
    """
    state = torch.random.get_rng_state()  # dropout in train mode draws from the global RNG
    try:
        _grade_extract_features(fn)
    finally:
        torch.random.set_rng_state(state)
    return "extract_features: eval mode, no gradients, labels kept, caller's mode restored."


def _grade_extract_features(fn: Callable) -> None:

    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 1, 8, 8, generator=g)
    y = torch.arange(48) % 3
    data = ArrayDataset(x, y)
    torch.manual_seed(0)
    net = SmallCNN(num_classes=3, widths=(8, 16), dropout=0.5)
    with torch.no_grad():  # give BatchNorm running statistics that differ from any batch's
        net.train()
        for _ in range(3):
            net(2.0 * torch.rand(16, 1, 8, 8, generator=g))
        net.eval()
        expected = net.body(x)
    stats = copy.deepcopy(net.body.block1.bn.state_dict())
    net.train()

    out = fn(net.body, make_loader(data, 16))
    if not (isinstance(out, tuple) and len(out) == 2):
        raise _wrong(f"fn should return a pair (X, y), got {type(out).__name__}",
                    "collect features and labels batch by batch, then return "
                    "(torch.cat(features), torch.cat(labels))")
    X, labels = out
    X, labels = torch.as_tensor(X), torch.as_tensor(labels)
    if tuple(X.shape) != tuple(expected.shape):
        raise _wrong(f"X has shape {tuple(X.shape)}, expected {tuple(expected.shape)} "
                    f"(48 examples x 16 features)", "concatenate the batches along dim 0")
    if not torch.equal(labels.cpu().long(), y):
        raise _wrong("the labels do not match the loader's labels, in order",
                    "append y from every batch and torch.cat them; do not shuffle")
    if X.requires_grad or X.grad_fn is not None:
        raise _wrong("the features carry a gradient graph",
                    "run the forward passes inside `with torch.no_grad():` (or decorate "
                    "fn with @torch.no_grad()): no memory is spent on a graph")
    for name, t in net.body.block1.bn.state_dict().items():
        if not torch.equal(t, stats[name]):
            raise _wrong(f"BatchNorm's running statistics changed ({name})",
                        "in train mode BatchNorm updates running_mean/var on every forward "
                        "pass, even under no_grad: call model.eval() before the loop")
    if not torch.allclose(X.cpu().float(), expected, atol=1e-5):
        raise _wrong("the features differ from the model's test-time (eval-mode) features",
                    "call model.eval() before extracting: dropout and BatchNorm behave "
                    "differently in train mode")
    if not (net.body.training and all(m.training for m in net.body.modules())):
        raise _wrong("the model was in train mode but is not any more",
                    "remember `was_training = model.training` first and end with "
                    "`model.train(was_training)`")
    net.eval()
    fn(net.body, make_loader(data, 16))
    if net.body.training:
        raise _wrong("the model was in eval mode but fn left it in train mode",
                    "restore the mode the model had (model.train(was_training)); do not "
                    "call model.train() unconditionally")

    def broken_loader():
        yield x[:16], y[:16]
        raise RuntimeError("loader failed")

    net.train()
    try:
        fn(net.body, broken_loader())
    except RuntimeError:
        pass
    else:
        raise _wrong("an error from the loader was swallowed",
                    "let exceptions propagate; do not catch them without re-raising")
    if not net.body.training:
        raise _wrong("after an error half-way, the model was left in eval mode",
                    "restore the mode in a `finally:` block, so it runs on errors too")


def _kd_mistakes(s, t, y, T, alpha) -> dict[str, torch.Tensor]:
    """What the usual wrong versions of the KD loss compute (chapter 5 shows them with numbers)."""
    log_ps, log_pt = F.log_softmax(s / T, dim=1), F.log_softmax(t / T, dim=1)
    ps, pt = log_ps.exp(), log_pt.exp()
    ce = F.cross_entropy(s, y)

    def kl(inp, target, reduction="batchmean"):
        with warnings.catch_warnings():  # reduction="mean" warns; here it is on purpose
            warnings.simplefilter("ignore", UserWarning)
            return F.kl_div(inp, target, reduction=reduction)

    def full(soft, t2=T * T):
        return alpha * t2 * soft + (1 - alpha) * ce

    right = kl(log_ps, pt)
    return {
        "the KL arguments are swapped (KL(student || teacher)): the first argument of "
        "F.kl_div is the student's log-probabilities, the second the teacher's probabilities":
            full(kl(log_pt, ps)),
        "the first argument of F.kl_div must be log-probabilities (F.log_softmax), "
        "not probabilities": full(kl(ps, pt)),
        "reduction='mean' averages over classes too (divides by the number of classes); "
        "use reduction='batchmean'": full(kl(log_ps, pt, "mean")),
        "reduction='sum' adds over the batch; use reduction='batchmean' to average over "
        "examples": full(kl(log_ps, pt, "sum")),
        "the soft term is missing its T**2 factor": full(right, t2=1.0),
        "divide both logits by the temperature before the softmaxes":
            full(kl(F.log_softmax(s, 1), F.softmax(t, 1))),
        "the cross-entropy term uses the raw logits (temperature 1), not s / T":
            alpha * T * T * right + (1 - alpha) * F.cross_entropy(s / T, y),
        "alpha weights the soft term and (1 - alpha) the hard one, not the other way round":
            (1 - alpha) * T * T * right + alpha * ce,
    }


@_grader('alpha * T**2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)')
def check_kd_loss(fn, *, trials: int = 25, seed: int = 0) -> None:
    """Exercise checker: does ``fn(s, t, y, temperature=T, alpha=a)`` equal :func:`kd_loss`?

    Compares on random logits, labels, temperatures and weights. Prints a pass
    message, or raises ``AssertionError`` with a hint; when the answers match one
    of the usual wrong versions on every failing case, the hint names it
    (chapter 5).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.check_kd_loss(lambda s, t, y, temperature, alpha: tu.kd_loss(
    ...     s, t, y, temperature=temperature, alpha=alpha))
    Correct: your loss matches tu.kd_loss on 25 random cases (T from 1 to 20, alpha from 0.1 to 0.9).
    """
    if not callable(fn):
        raise TypeError(f"check_kd_loss needs a function, got {type(fn).__name__}")
    g = torch.Generator().manual_seed(seed)
    temperatures = [1.0, 2.0, 4.0, 20.0, 7.5]
    alphas = [0.5, 0.9, 0.1, 0.7, 0.3]
    first_failure, suspects = None, None
    for i in range(trials):
        b, c = 2 + i % 7, 3 + i % 8
        s = torch.randn(b, c, generator=g) * 3
        t = torch.randn(b, c, generator=g) * 3
        y = torch.randint(0, c, (b,), generator=g)
        T, a = temperatures[i % len(temperatures)], alphas[(i // 2) % len(alphas)]
        case = f"{b} examples, {c} classes, T={T:g}, alpha={a:g}"
        try:
            got = fn(s.clone(), t.clone(), y.clone(), temperature=T, alpha=a)
        except Exception as e:  # show the reader's error with the inputs that caused it
            raise AssertionError(
                f"your function raised {type(e).__name__}: {e} (inputs: {case}); it is called "
                "as fn(student_logits, teacher_logits, targets, temperature=T, alpha=a)"
            ) from e
        got = torch.as_tensor(got).detach().float()
        if got.numel() != 1:
            raise AssertionError(f"expected a scalar loss, got shape {tuple(got.shape)} ({case}); "
                                 "average over the batch")
        got = got.reshape(())
        want = kd_loss(s, t, y, temperature=T, alpha=a)
        if torch.allclose(got, want, rtol=1e-4, atol=1e-5):
            continue
        matches = {k for k, v in _kd_mistakes(s, t, y, T, a).items()
                   if torch.allclose(got, v, rtol=1e-4, atol=1e-5)}
        suspects = matches if suspects is None else suspects & matches
        if first_failure is None:
            first_failure = f"got {got.item():.6f}, expected {want.item():.6f} ({case})"
    if first_failure is not None:
        hint = ("; ".join(sorted(suspects)) if suspects else
                "compare with alpha * T**2 * KL(softmax(t/T) || softmax(s/T)), KL summed over "
                "classes and averaged over the batch, + (1 - alpha) * cross_entropy(s, y)")
        raise AssertionError(f"not the KD loss yet: {first_failure}. Hint: {hint}")
    return (f"your loss matches tu.kd_loss on {trials} random cases "
          f"(T from {min(temperatures):g} to {max(temperatures):g}, "
          f"alpha from {min(alphas):g} to {max(alphas):g}).")



@_grader('the half-width is t(0.975, n-1) * std(values, ddof=1) / sqrt(n)')
def check_ci95(fn: Callable[[Sequence[float]], float]) -> None:
    """Exercise check (chapter 1): ``fn(values)`` returns the 95% half-width of the mean.

    The interval is Student's t: ``t_{0.975, n-1} * s / sqrt(n)`` with the sample
    standard deviation ``s`` (ddof = 1). Prints a message when right, raises
    ``AssertionError`` with a hint when wrong.
    """
    cases = [[0.80, 0.85, 0.90], [0.1, 0.4], [0.5, 0.52, 0.49, 0.55, 0.51, 0.47, 0.5, 0.53]]
    for values in cases:
        want = summarize(values).ci95
        got = fn(list(values))
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise AssertionError(f"return one number (the half-width), got {got!r}") from None
        n = len(values)
        sd0 = float(np.std(values, ddof=0))
        if math.isclose(got, 1.96 * float(np.std(values, ddof=1)) / math.sqrt(n), rel_tol=1e-3):
            raise AssertionError(
                f"for n={n} you used the normal quantile 1.96; with few seeds use Student's t "
                f"with n-1 degrees of freedom (scipy.stats.t.ppf(0.975, n-1))"
            )
        if sd0 > 0 and math.isclose(got, want * sd0 / float(np.std(values, ddof=1)), rel_tol=1e-3):
            raise AssertionError("use the sample standard deviation (ddof=1), not ddof=0")
        if math.isclose(got, 2 * want, rel_tol=1e-3):
            raise AssertionError("that is the full width; return the half-width (mean ± it)")
        if not math.isclose(got, want, rel_tol=1e-3, abs_tol=1e-9):
            raise AssertionError(
                f"for values {values} expected {want:.5f}, got {got:.5f}; the half-width is "
                "t(0.975, n-1) * std(values, ddof=1) / sqrt(n)"
            )
    return "your interval matches tu.summarize(values).ci95."


@_grader('W = (X^T X + alpha I)^-1 X^T T, solved with np.linalg.solve')
def check_attribute_map(fn: Callable[[np.ndarray, np.ndarray, float], np.ndarray]) -> None:
    r"""Exercise check (chapter 2): ``fn(X, T, alpha)`` returns the ridge solution ``W``.

    ``W = (X^T X + alpha I)^{-1} X^T T`` for inputs ``X`` ``[n, d]`` and attribute
    targets ``T`` ``[n, m]`` (no intercept). Prints a message when right, raises
    ``AssertionError`` with a hint when wrong.
    """
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 5))
    T = np.sign(rng.normal(size=(30, 3)))
    for alpha in (0.5, 10.0):
        want = np.linalg.solve(X.T @ X + alpha * np.eye(5), X.T @ T)
        got = fn(X.copy(), T.copy(), alpha)
        got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
        if got.shape != want.shape:
            hint = " (transposed?)" if got.shape == want.shape[::-1] else ""
            raise AssertionError(
                f"W must have shape [d, m] = {want.shape} (inputs x attributes), got "
                f"{got.shape}{hint}"
            )
        unreg = np.linalg.lstsq(X, T, rcond=None)[0]
        if np.allclose(got, unreg, atol=1e-6):
            raise AssertionError("that is plain least squares: add alpha * I to X^T X")
        if not np.allclose(got, want, atol=1e-6):
            raise AssertionError(
                f"alpha={alpha}: W differs from (X^T X + alpha I)^-1 X^T T by up to "
                f"{np.abs(got - want).max():.3g}; solve the linear system with np.linalg.solve"
            )
    return "W = (X^T X + alpha I)^-1 X^T T, the map AttributeZeroShot learns."


@_grader('rank r gets positions r, r + W, r + 2W, ... of each global batch')
def check_rank_batches(fn: Callable[[list[int], int, int], list]) -> None:
    """Exercise check (chapter 11): ``fn(perm, world_size, local_batch)`` gives each rank's batches.

    ``fn`` must return ``out[r][j]``, the indices of process ``r``'s j-th local
    batch, exactly as ``DistributedSampler(drop_last=True)`` and a
    ``DataLoader(drop_last=True)`` make them (see :func:`rank_batches`). Prints one
    line starting with ``Correct:`` when right; raises ``AssertionError`` ending with
    a hint when wrong.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.check_rank_batches(tu.rank_batches)
    Correct: every process gets the same slices of each global batch as DistributedSampler gives it.
    """
    import torch

    cases = [(8, 2, 2), (10, 2, 2), (11, 3, 1), (23, 2, 4), (12, 4, 3), (7, 1, 3)]
    for n, world, local in cases:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(n)).tolist()
        want = rank_batches(perm, world, local)
        got = fn(list(perm), world, local)
        try:
            got = [[[int(i) for i in batch] for batch in per_rank] for per_rank in got]
        except TypeError:
            raise AssertionError(
                f"return a list with one list of batches per process, got {got!r}\n"
                "Hint: out[r][j] is the list of indices of rank r's j-th batch") from None
        if got == want:
            continue
        where = f"for perm={perm}, world_size={world}, local_batch={local}"
        contiguous = [[perm[r * (n // world):(r + 1) * (n // world)][i:i + local]
                       for i in range(0, n // world - local + 1, local)] for r in range(world)]
        if len(got) != world:
            hint = "return one list of batches for every rank 0 .. world_size - 1"
        elif got == contiguous:
            hint = ("DistributedSampler does not give rank r a contiguous block: it takes "
                    "every world_size-th index, starting at position r (perm[r::world_size])")
        elif any(len(b) != local for per_rank in got for b in per_rank):
            hint = ("with drop_last=True every batch has exactly local_batch indices: drop "
                    "the incomplete tail (the sampler drops n % world_size indices first)")
        else:
            hint = ("keep perm[:world_size * (n // world_size)], take perm[r::world_size] "
                    "for rank r and cut it into full batches of local_batch")
        raise AssertionError(f"{where} expected {want}, got {got}\nHint: {hint}")
    return ("every process gets the same slices of each global batch as "
          "DistributedSampler gives it.")


@_grader("CORAL is ||C_S - C_T||_F^2 / (4 d^2) with unbiased covariances")
def check_coral_loss(fn: Callable) -> None:
    """Check a reader's Deep CORAL loss ``fn(source_features, target_features)`` (chapter 10).

    It must return :math:`\\lVert C_S - C_T \\rVert_F^2 / (4 d^2)` with unbiased
    covariances (divided by ``n - 1``), as a scalar tensor that gradients flow
    through, for batches of different sizes. Prints one line starting with
    "Correct:" when all cases pass; raises ``AssertionError`` ending with a hint
    otherwise.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.check_coral_loss(tu.coral_loss)
    Correct: your CORAL loss matches the reference on 4 cases and passes gradients.
    """
    g = torch.Generator().manual_seed(0)
    cases = [
        ("two points per domain in 2-D (covariances [[2, 0], [0, 0]] and [[0, 0], [0, 2]])",
         torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 2.0]])),
        ("a target that is the source moved by a constant (same covariance)",
         (s := torch.randn(20, 3, generator=g, dtype=torch.float64)), s + 5.0),
        ("16 source and 24 target rows of width 5",
         torch.randn(16, 5, generator=g, dtype=torch.float64),
         2 * torch.randn(24, 5, generator=g, dtype=torch.float64)),
        ("8 source and 8 target rows of width 12",
         torch.randn(8, 12, generator=g, dtype=torch.float64),
         torch.randn(8, 12, generator=g, dtype=torch.float64) @ torch.randn(
             12, 12, generator=g, dtype=torch.float64)),
    ]
    for what, xs, xt in cases:
        want = float(coral_loss(xs, xt))
        try:
            got = fn(xs.clone(), xt.clone())
        except Exception as e:  # noqa: BLE001 - report any failure to the reader
            raise _wrong(f"On {what} your function raised {type(e).__name__}: {e}",
                        "center each feature on its own batch mean, then "
                        "C = centred.T @ centred / (n - 1); both batches may differ in n.") from e
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise _wrong(f"On {what} your function returned {type(got).__name__} "
                        f"{getattr(got, 'shape', '')}, not a scalar tensor",
                        "return a 0-d tensor (the sum of squared differences, scaled) so "
                        "that it can be added to the cross-entropy and back-propagated.")
        value = float(got)
        if abs(value - want) <= 1e-6 * max(1.0, abs(want)):
            continue
        hint = ("CORAL is the squared Frobenius norm of C_S - C_T, divided by 4 d^2, with "
                "each covariance computed on its own batch.")
        for slip, wrong in _coral_slips(xs, xt).items():
            if abs(value - wrong) <= 1e-6 * max(1.0, abs(wrong)):
                hint = slip
                break
        raise _wrong(f"On {what} the CORAL loss should be {want:.6g} but your function "
                    f"returned {value:.6g}", hint)
    xs = torch.randn(10, 4, generator=g, dtype=torch.float64, requires_grad=True)
    xt = torch.randn(12, 4, generator=g, dtype=torch.float64)
    out = fn(xs, xt)
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        raise _wrong("The loss does not carry gradients back to the source features",
                    "compute it with torch operations on the tensors you are given, without "
                    ".detach(), .item(), .numpy() or torch.no_grad().")
    out.backward()
    xs2 = xs.detach().clone().requires_grad_(True)
    coral_loss(xs2, xt).backward()
    if xs.grad is None or not torch.allclose(xs.grad, xs2.grad, atol=1e-8):
        raise _wrong("The gradient of your loss with respect to the source features differs "
                    "from the reference",
                    "keep the whole computation in torch, from the features to the scalar.")
    return f"your CORAL loss matches the reference on {len(cases)} cases and passes gradients."


def _coral_slips(xs: torch.Tensor, xt: torch.Tensor) -> dict[str, float]:
    """What common slips return on ``xs``, ``xt``, keyed by the hint that names them."""
    d = xs.shape[1]

    def cov(f: torch.Tensor, ddof: int) -> torch.Tensor:
        c = f - f.mean(0)
        return c.T @ c / (len(f) - ddof)

    sq = float(((cov(xs, 1) - cov(xt, 1)) ** 2).sum())
    biased = float(((cov(xs, 0) - cov(xt, 0)) ** 2).sum()) / (4 * d * d)
    return {
        "you forgot to divide by 4 d^2 (d = the feature width).": sq,
        "you took the Frobenius norm; CORAL uses its square, ||C_S - C_T||_F ** 2.":
            sq ** 0.5 / (4 * d * d),
        "use the unbiased covariance: divide by n - 1, not n.": biased,
        "divide by 4 d^2, not by 4 d.": sq / (4 * d),
    }


def _lora_cases() -> list[tuple[str, LoRALinear, torch.Tensor]]:
    """LoRA layers with a non-zero B (at init B = 0 hides every mistake) and their inputs."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for n_in, n_out, rank, alpha, shape in ((6, 4, 2, 4.0, (5,)), (8, 3, 1, 1.0, (2, 7)),
                                            (5, 9, 4, 2.0, (3,)), (10, 10, 3, 12.0, (4,))):
        torch.manual_seed(int(torch.randint(0, 10_000, (1,), generator=g)))
        layer = LoRALinear(nn.Linear(n_in, n_out), rank=rank, alpha=alpha)
        with torch.no_grad():
            layer.lora_B.copy_(torch.randn(n_out, rank, generator=g))
        x = torch.randn(*shape, n_in, generator=g)
        desc = (f"a LoRALinear({n_in} -> {n_out}, rank={rank}, alpha={alpha:g}) on an input "
                f"of shape {list(x.shape)}")
        cases.append((desc, layer, x))
    return cases


@_grader("h = W0 x + (alpha / rank) * B A x, computed without merging")
def check_lora_forward(fn: Callable[[LoRALinear, torch.Tensor], torch.Tensor]) -> None:
    """Check a reader's LoRA forward pass ``fn(layer, x)`` against ``layer(x)`` (chapter 9).

    ``layer`` is a :class:`transfer_utils.LoRALinear` with attributes ``base``
    (the frozen ``nn.Linear``), ``lora_A`` ``[r, in]``, ``lora_B`` ``[out, r]``,
    ``alpha`` and ``rank``; ``x`` has ``in`` features in its last axis and any
    number of leading axes. The cases use a non-zero ``B``. Common mistakes
    (no scaling, ``alpha`` instead of ``alpha / rank``, a missing bias) get a
    specific hint.

    Examples
    --------
    >>> import transfer_utils as tu
    >>> def forward(layer, x):
    ...     delta = x @ layer.lora_A.T @ layer.lora_B.T
    ...     return layer.base(x) + (layer.alpha / layer.rank) * delta
    >>> tu.check_lora_forward(forward)
    Correct: your LoRA forward pass matches tu.LoRALinear on all 4 layers.
    """
    cases = _lora_cases()
    for desc, layer, x in cases:
        with torch.no_grad():
            want = layer(x)
            delta = layer.lora_B @ layer.lora_A
            try:
                got = fn(layer, x.clone())
            except Exception as e:  # noqa: BLE001 - report any failure to the reader
                raise _wrong(f"your function raised {type(e).__name__}: {e} on {desc}.",
                            "x has shape [..., in]; x @ A.T has shape [..., r] and "
                            "(x @ A.T) @ B.T has shape [..., out].") from e
        if not isinstance(got, torch.Tensor):
            raise _wrong(f"your function returned a {type(got).__name__}, not a tensor, on "
                        f"{desc}.", "return base(x) + (alpha / rank) * (x @ A.T @ B.T).")
        if got.shape != want.shape:
            raise _wrong(f"on {desc} the output should have shape {list(want.shape)} but yours "
                        f"has {list(got.shape)}.",
                        "A is [r, in] and B is [out, r]: use x @ A.T @ B.T (or "
                        "F.linear(F.linear(x, A), B)).")
        got = got.detach()
        if torch.allclose(got, want, atol=1e-5):
            continue
        base = layer.base(x).detach()
        low_rank = x @ delta.T
        hint = "the output is base(x) + (alpha / rank) * (x @ A.T @ B.T)."
        if torch.allclose(got, base + low_rank, atol=1e-5):
            hint = "scale the low-rank term by alpha / rank (you left the scaling out)."
        elif torch.allclose(got, base + layer.alpha * low_rank, atol=1e-5):
            hint = "the scale is alpha / rank, not alpha."
        elif torch.allclose(got, base, atol=1e-5):
            hint = "you returned the frozen layer alone: add the low-rank update."
        elif torch.allclose(got, want - layer.base.bias, atol=1e-5):
            hint = "keep the base layer's bias: call layer.base(x), not x @ W.T."
        elif torch.allclose(got, layer.scaling * low_rank, atol=1e-5):
            hint = "add the frozen layer's output base(x) to the update."
        raise _wrong(f"on {desc} your output differs from layer(x) by up to "
                    f"{(got - want).abs().max().item():.4g}.", hint)
    return f"your LoRA forward pass matches tu.LoRALinear on all {len(cases)} layers."


@_grader("the merged weight is W0 + (alpha / rank) * (B @ A)")
def check_lora_merge(fn: Callable[[LoRALinear], torch.Tensor]) -> None:
    """Check a reader's merge ``fn(layer) -> weight``: ``W0 + (alpha/rank) B A``, shape ``[out, in]``.

    With that weight (and the base bias) a plain ``nn.Linear`` computes what the
    LoRA layer computes, at no extra cost (chapter 9).

    Examples
    --------
    >>> import transfer_utils as tu
    >>> tu.check_lora_merge(lambda l: l.base.weight + l.alpha / l.rank * l.lora_B @ l.lora_A)
    Correct: your merged weights reproduce the LoRA layers' outputs on all 4 layers.
    """
    cases = _lora_cases()
    for desc, layer, _ in cases:
        want = layer.base.weight + layer.scaling * layer.lora_B @ layer.lora_A
        try:
            with torch.no_grad():
                got = fn(layer)
        except Exception as e:  # noqa: BLE001 - report any failure to the reader
            raise _wrong(f"your function raised {type(e).__name__}: {e} on {desc}.",
                        "B @ A has shape [out, in], like the base weight.") from e
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            shape = list(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise _wrong(f"on {desc} the merged weight should be a tensor of shape "
                        f"{list(want.shape)} but yours is {shape}.",
                        "return W0 + (alpha / rank) * (B @ A), not A @ B or a module.")
        got = got.detach()
        if not torch.allclose(got, want.detach(), atol=1e-5):
            hint = "the merged weight is W0 + (alpha / rank) * (B @ A)."
            with torch.no_grad():
                plain = layer.base.weight + layer.lora_B @ layer.lora_A
            if torch.allclose(got, plain, atol=1e-5):
                hint = "multiply B @ A by alpha / rank before adding it."
            raise _wrong(f"on {desc} your merged weight differs from W0 + (alpha/r) B A by up "
                        f"to {(got - want).abs().max().item():.4g}.", hint)
    return (f"your merged weights reproduce the LoRA layers' outputs on all "
            f"{len(cases)} layers.")
