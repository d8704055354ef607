"""scripts/finetune_ddp.py (chapter 11): 1 and 2 processes agree, resume reproduces, errors clear.

The workers run the script's own entry point with the gloo backend and meet at a
store on a port the system picks, as under ``torchrun --standalone``. They are
forked from this process, which has already imported torch and the data, so a
launch costs seconds instead of the tens of seconds that fresh interpreters take on
a busy 2-core machine. The real ``torchrun`` command runs in chapter 11 (book/11_distributed.ipynb,
executed by nbval and the book build).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest
import torch

import transfer_utils as tu

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "finetune_ddp.py"
# Small but real: 30 steps of global batch 32 cross an epoch boundary (28 steps per epoch).
STEPS = 30
COMMON = ["--steps", str(STEPS), "--global-batch", "32", "--seed", "0", "--bn-eval",
          "--log-every", "10"]

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or sys.platform == "win32",
    reason="needs torch.distributed with gloo and fork")


def _load_script():
    spec = importlib.util.spec_from_file_location("finetune_ddp", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ddp_script = _load_script()


def _warm_up():
    """Import in this process what every worker needs, so forked workers start at once."""
    import torch._dynamo  # noqa: F401  (DistributedDataParallel imports it: seconds)

    tu.load_digits()
    tu.zoo.load("mnist8_cnn", device="cpu")


def launch(nproc: int, argv: list[str], log_dir: Path, *, timeout: float = 240
           ) -> tuple[bool, dict[int, str]]:
    """Run the script's ``cli`` on ``nproc`` worker processes, as torchrun would.

    Like torchrun's agent, this process hosts the rendezvous store on a port the
    system picks (port 0: two test runs never share one) and tells the workers
    through the env:// variables, with ``TORCHELASTIC_USE_AGENT_STORE``. The workers
    are forked, so they start with torch already imported. Returns (every worker
    succeeded, {rank: its stdout and stderr}).
    """
    import multiprocessing

    _warm_up()
    log_dir.mkdir(parents=True, exist_ok=True)
    store = torch.distributed.TCPStore("127.0.0.1", 0, nproc, is_master=True,
                                       wait_for_workers=False)
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port),
           "TORCHELASTIC_USE_AGENT_STORE": "True"}
    ctx = multiprocessing.get_context("fork")
    logs = [log_dir / f"rank{rank}.log" for rank in range(nproc)]
    procs = [ctx.Process(target=_worker, args=(rank, nproc, env, logs[rank], argv))
             for rank in range(nproc)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(deadline - time.monotonic(), 0.1))
    for p in procs:  # a worker that outlived the others' failure: end it, as torchrun does
        if p.is_alive():
            p.terminate()
            p.join(10)
    del store
    return (all(p.exitcode == 0 for p in procs),
            {rank: log.read_text() for rank, log in enumerate(logs)})


def _worker(rank: int, world: int, env: dict, log: Path, argv: list[str]) -> None:
    os.environ.update(env, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world))
    with open(log, "w") as f:  # this worker's stdout and stderr go to its log file
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        sys.stdout = os.fdopen(1, "w", closefd=False)
        sys.stderr = os.fdopen(2, "w", closefd=False)
        try:
            code = ddp_script.cli(argv)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def max_weight_difference(dir_a: Path, dir_b: Path) -> float:
    a = tu.load_checkpoint(dir_a / "model.safetensors").state_dict
    b = tu.load_checkpoint(dir_b / "model.safetensors").state_dict
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One uninterrupted run on 1 process and one on 2 processes (gloo)."""
    _warm_up()
    out = {}
    for nproc in (1, 2):
        d = tmp_path_factory.mktemp(f"np{nproc}")
        ok, logs = launch(nproc, [*COMMON, "--out", str(d / "run")], d / "logs")
        assert ok, f"the {nproc}-process run failed:\n{logs}"
        out[nproc] = d / "run"
    return out


def test_one_and_two_processes_end_with_the_same_weights(runs):
    m1 = json.loads((runs[1] / "metrics.json").read_text())
    m2 = json.loads((runs[2] / "metrics.json").read_text())
    assert (m1["world_size"], m2["world_size"]) == (1, 2)
    assert m1["steps"] == m2["steps"] == STEPS
    assert (m1["local_batch"], m2["local_batch"]) == (32, 16)
    diff = max_weight_difference(runs[1], runs[2])
    print(f"max |w(1 process) - w(2 processes)| = {diff:.2e}")
    assert diff <= 1e-4
    assert abs(m1["test_accuracy"] - m2["test_accuracy"]) <= 2 / m1["test_images"]
    assert m1["test_accuracy"] > 0.8, "fine-tuning should work, not only agree"
    for key in ("train_seconds", "seconds_per_step", "startup_seconds"):
        assert m2[key] > 0


def test_resume_after_a_crash_reproduces_the_uninterrupted_run(runs, tmp_path):
    out = tmp_path / "run"
    ok, logs = launch(2, [*COMMON, "--out", str(out), "--save-every", "10",
                          "--simulate-crash", "1", "25"], tmp_path / "logs1")
    assert not ok
    # every process says what happened, in one line, and how to go on
    assert "rank 1: simulated crash at step 25" in logs[1]
    assert "rank 0:" in logs[0] and f"--resume {out}" in logs[0], logs[0]
    assert "lost contact with another process" in logs[0] or "stopped by" in logs[0]
    assert tu.load_checkpoint(out / "model.safetensors").meta["step"] == 20
    assert not (out / "metrics.json").exists()

    shutil.copytree(out, tmp_path / "copy")
    ok, logs = launch(2, [*COMMON, "--resume", str(out)], tmp_path / "logs2")
    assert ok, logs
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 20 and metrics["steps"] == STEPS
    diff = max_weight_difference(out, runs[2])
    print(f"max |w(resumed) - w(uninterrupted)| = {diff:.2e}")
    assert diff <= 1e-4

    # the world size may change between the stop and the resume: 2 processes, then 1
    ok, logs = launch(1, [*COMMON, "--resume", str(tmp_path / "copy")], tmp_path / "logs3")
    assert ok, logs
    assert max_weight_difference(tmp_path / "copy", runs[1]) <= 1e-4


def test_global_batch_that_does_not_split_evenly_is_refused_on_every_rank(tmp_path):
    _warm_up()
    ok, logs = launch(2, ["--global-batch", "33", "--out", str(tmp_path / "run")],
                      tmp_path / "logs")
    assert not ok
    for rank in (0, 1):
        assert f"rank {rank}: --global-batch 33 does not split into equal local batches" in (
            logs[rank]), logs[rank]
        assert "use a multiple of 2" in logs[rank]


def test_resume_refuses_changed_settings_and_missing_checkpoints(runs, tmp_path):
    run = {key: None for key in ddp_script.RUN_KEYS}
    run.update(source="mnist8_cnn", k=0, seed=0, global_batch=64, accumulate=1, lr=0.01,
               momentum=0.9, bn_eval=True)
    with pytest.raises(ddp_script.Failure, match=r"--global-batch 64 \(checkpoint: 32\)"):
        ddp_script.read_state(runs[2], run, steps=100)
    run["global_batch"] = 32
    with pytest.raises(ddp_script.Failure, match="already at step 30; ask for more with --steps"):
        ddp_script.read_state(runs[2], run, steps=30)
    with pytest.raises(ddp_script.Failure, match="no model.safetensors there"):
        ddp_script.read_state(tmp_path, run, steps=100)


def test_arguments_are_checked():
    with pytest.raises(SystemExit):
        ddp_script.parse_args(["--steps", "0", "--out", "x"])
    with pytest.raises(SystemExit):
        ddp_script.parse_args(["--steps", "5"])  # neither --out nor --resume
    assert ddp_script.parse_args(["--resume", "d"]).out == Path("d")



def test_a_taken_port_is_reported_on_every_rank(tmp_path):
    """Launched without an agent's store (env:// variables, as srun or mpirun set them)."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        ok, logs = _launch_on_port(port, ["--timeout", "1", "--out", str(tmp_path / "run")],
                                   tmp_path)
    finally:
        holder.close()
    assert not ok
    assert logs[0].startswith("rank 0: "), logs[0]
    assert f"port {port} on 127.0.0.1 is taken" in logs[0] and "torchrun --standalone" in logs[0]
    assert logs[1].startswith("rank 1: could not join the process group"), logs[1]


def _launch_on_port(port, argv, log_dir):
    import multiprocessing

    _warm_up()
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    ctx = multiprocessing.get_context("fork")
    logs = [log_dir / f"rank{rank}.log" for rank in range(2)]
    procs = [ctx.Process(target=_worker, args=(rank, 2, env, logs[rank], argv))
             for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        if p.is_alive():
            p.terminate()
    return (all(p.exitcode == 0 for p in procs),
            {rank: log.read_text() for rank, log in enumerate(logs)})


def test_gradient_accumulation_matches_the_full_batch(runs, tmp_path):
    """1 process x 2 micro-batches of 16 = 1 process x 32 (the one-machine route to a big batch)."""
    ok, logs = launch(1, [*COMMON, "--accumulate", "2", "--out", str(tmp_path / "run")],
                      tmp_path / "logs")
    assert ok, logs
    assert "(2 micro-batches of 16)" in logs[0]
    assert max_weight_difference(tmp_path / "run", runs[1]) <= 1e-4


# ----------------------------------------------------------- tu.rank_batches and friends


@pytest.mark.parametrize("n,world,local", [(20, 2, 3), (23, 2, 4), (17, 3, 2), (9, 1, 4)])
def test_rank_batches_is_what_distributed_sampler_and_dataloader_give(n, world, local):
    from torch.utils.data import DataLoader, DistributedSampler

    data = list(range(n))
    seed, epoch = 5, 2
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    want = tu.rank_batches(perm, world, local)
    for rank in range(world):
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True,
                                     seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
        got = [b.tolist() for b in DataLoader(data, batch_size=local, sampler=sampler,
                                              drop_last=True)]
        assert got == want[rank]


@pytest.mark.parametrize("world,local", [(2, 3), (3, 2), (4, 1)])
def test_the_ranks_jth_batches_together_are_the_one_process_jth_batch(world, local):
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(1)).tolist()
    split = tu.rank_batches(perm, world, local)
    (single,) = tu.rank_batches(perm, 1, world * local)
    assert len(split[0]) == len(single) == 50 // (world * local)
    for j, batch in enumerate(single):
        assert sorted(i for r in range(world) for i in split[r][j]) == sorted(batch)


def test_rank_batches_names_a_bad_argument():
    with pytest.raises(ValueError, match="rank_batches: world_size must be a positive integer"):
        tu.rank_batches([0, 1], 0, 1)
    with pytest.raises(ValueError, match="local_batch must be a positive integer, got 1.5"):
        tu.rank_batches([0, 1], 1, 1.5)


def test_training_memory_ddp_replicates_and_fsdp_shards():
    ddp = tu.training_memory(10**9, 8)
    fsdp = tu.training_memory(10**9, 8, strategy="fsdp")
    assert ddp["total"] == pytest.approx(16.0)  # 16 bytes per parameter on every device
    assert fsdp["total"] == pytest.approx(2.0)
    assert tu.training_memory(10**9, precision="fp32")["weights"] == pytest.approx(4.0)
    assert set(ddp) == {"weights", "gradients", "optimizer", "total"}
    with pytest.raises(ValueError, match="strategy must be one of 'ddp', 'fsdp'; got 'zero'"):
        tu.training_memory(10, strategy="zero")
    with pytest.raises(ValueError, match="n_params must be a positive integer"):
        tu.training_memory(0)


def test_check_rank_batches_accepts_the_sampler_and_explains_a_contiguous_split(capsys):
    tu.check_rank_batches(tu.rank_batches)
    assert capsys.readouterr().out.startswith("Correct:")

    def contiguous(perm, world, local):
        m = len(perm) // world
        return [[perm[r * m:(r + 1) * m][i:i + local] for i in range(0, m - local + 1, local)]
                for r in range(world)]

    with pytest.raises(AssertionError, match=r"(?s)perm\[r::world_size\].*$") as err:
        tu.check_rank_batches(contiguous)
    assert "\nHint: DistributedSampler does not give rank r a contiguous block" in str(err.value)
    with pytest.raises(AssertionError, match="Hint: return one list of batches for every rank"):
        tu.check_rank_batches(lambda perm, world, local: [[perm]])
    with pytest.raises(AssertionError, match="Hint: out\\[r\\]\\[j\\] is the list"):
        tu.check_rank_batches(lambda perm, world, local: 3)


def test_plot_rank_batches_draws_one_cell_per_example_and_row():
    fig = tu.plot_rank_batches(list(range(10)), 2, 2)
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * 10
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2 processes", "1 process"]


def test_k_shot_training_set_and_a_batch_larger_than_it(tmp_path):
    ok, logs = launch(1, ["--k", "5", "--global-batch", "60", "--out", str(tmp_path / "a")],
                      tmp_path / "logs1")
    assert not ok
    assert "--global-batch 60 is larger than the 50 training images" in logs[0]
    ok, logs = launch(1, ["--k", "5", "--global-batch", "10", "--steps", "2", "--out",
                          str(tmp_path / "b")], tmp_path / "logs2")
    assert ok, logs
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["train_images"] == 50


@pytest.mark.parametrize("bn_eval", [True, False])
def test_averaged_rank_gradients_equal_the_full_batch_gradient_only_with_bn_in_eval(bn_eval):
    """Chapter 11's equation: (g_0 + g_1) / 2 = g(full batch), unless BatchNorm uses batch stats."""
    import torch.nn.functional as F

    model = tu.zoo.load("mnist8_cnn", device="cpu")
    tu.seed_everything(0)
    tu.replace_head(model, 10).train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.train(not bn_eval)
    data = tu.load_digits()
    x, y = data.x[:32], data.y[:32]

    def grad(xb, yb):
        model.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    full = grad(x, y)
    averaged = (grad(x[0::2], y[0::2]) + grad(x[1::2], y[1::2])) / 2
    gap = ((averaged - full).abs().max() / full.abs().max()).item()
    assert (gap < 1e-5) if bn_eval else (gap > 1e-3)
