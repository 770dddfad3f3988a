"""Data-parallel training: sharding, gradient averaging and checkpoints of 2 gloo processes against one process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from untwine.data.base import ImageDataset
from untwine.inference import distributed
from untwine.inference.distributed import Replica
from untwine.inference.train import TrainConfig, TrainingError, fit, make_optimizer, usable_images

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from distributed_worker import AUXILIARY_SETTINGS, SETTINGS, small_vae  # noqa: E402
from probe_model import DeterministicProbedVAE, build, toy_data  # noqa: E402


@pytest.mark.parametrize("unit, world", [(1, 2), (1, 3), (4, 2)])
def test_the_shards_of_each_step_together_are_the_single_process_batch(unit, world):
    n, batch = 96, 24
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    shards = [distributed.shard_order(order, unit, Replica(r, world, r)) for r in range(world)]
    local = batch // world
    assert all(len(s) == n // world for s in shards)
    for b in range(n // batch):
        together = torch.cat([s[b * local : (b + 1) * local] for s in shards])
        assert sorted(together.tolist()) == sorted(order[b * batch : (b + 1) * batch].tolist())
    for shard in shards:  # a group never straddles two ranks
        groups = shard.reshape(-1, unit)
        assert all(torch.equal(g, order[int(torch.nonzero(order == g[0])) :][:unit]) for g in groups)


def test_an_epoch_leaves_out_fewer_units_than_ranks():
    order = torch.arange(10)
    shards = [distributed.shard_order(order, 1, Replica(r, 3, r)) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert len(set(torch.cat(shards).tolist())) == 9


def test_distributed_without_torchrun_says_how_to_launch(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    data = ImageDataset(torch.zeros(8, 1, 28, 28, dtype=torch.uint8), torch.zeros(8, dtype=torch.long), 1.0, "zeros")
    with pytest.raises(TrainingError, match="torchrun --nproc_per_node"):
        fit(small_vae(), data, TrainConfig(**SETTINGS, distributed=True), progress=False)


def _emulated_two_rank_run(data):
    """One process doing what two ranks do together: each half of a step's batch with that rank's random stream,
    gradients averaged, one Adam step; the reference for the gloo run."""
    config = TrainConfig(**SETTINGS)
    world = 2
    model = small_vae()
    loss = model.default_loss(len(data))
    optimizer = make_optimizer(model, config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    streams = []
    for rank in range(world):
        torch.manual_seed(config.seed + rank)
        streams.append(torch.get_rng_state())
    usable = usable_images(model, config.batch_size, data)
    losses = []
    for _ in range(config.epochs):
        perm = data.epoch_order(generator)[:usable]
        total = 0.0
        for start in range(0, usable, config.batch_size):
            batch = perm[start : start + config.batch_size]
            optimizer.zero_grad()
            for rank in range(world):
                torch.set_rng_state(streams[rank])
                x, y = data.batch(batch[rank::world])
                value = loss.differentiable_loss(model.model, model.guide, x, y) / len(x)
                (value / world).backward()
                total += float(value.detach()) * len(x)
                streams[rank] = torch.get_rng_state()
            optimizer.step()
        losses.append(total / usable)
    return model, losses


@pytest.fixture(scope="module")
def gloo_run(torchvision_root, tmp_path_factory):
    """The run folder of distributed_worker.py under torchrun with 2 gloo processes, and what each rank saved."""
    out = tmp_path_factory.mktemp("gloo")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1])}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(HERE / "distributed_worker.py"), str(torchvision_root), str(out),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def _untimed(rows):
    return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in rows]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_same_global_batch(mnist_train, gloo_run):
    tmp_path, ranks = gloo_run

    # replicas stay identical, and only rank 0 wrote the run files
    for key, value in ranks[0]["full"].items():
        assert torch.equal(value, ranks[1]["full"][key]), key
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["checkpoint.pt", "history.csv"]
    assert ranks[0]["steps"] == SETTINGS["epochs"] * 6  # 600 images, global batch 100 (50 per rank)

    # the same global batch in one process (each half with its rank's noise) gives the same training run
    reference, losses = _emulated_two_rank_run(mnist_train.random_subset(600, seed=1))
    for key, value in reference.state_dict().items():
        assert torch.allclose(ranks[0]["full"][key], value, rtol=1e-4, atol=1e-5), key
    history = [row["loss"] for row in ranks[0]["full_history"]]
    assert history == pytest.approx(losses, rel=1e-5)

    # interrupted after four steps (mid-epoch) and resumed: the same run, bit for bit
    for key, value in ranks[0]["full"].items():
        assert torch.equal(ranks[0]["resumed"][key], value), key

    assert _untimed(ranks[0]["resumed_history"]) == _untimed(ranks[0]["full_history"])


@pytest.mark.slow
def test_two_gloo_processes_train_the_auxiliary_probe_like_one_process(gloo_run):
    """The auxiliary update under DDP: its gradients averaged over the ranks (replicas stay equal and match one
    process on the whole batch, the model's guide having no noise), its optimiser checkpointed and resumed."""
    _, ranks = gloo_run
    for key, value in ranks[0]["aux_full"].items():
        assert torch.equal(value, ranks[1]["aux_full"][key]), key

    single = build(DeterministicProbedVAE)
    result = fit(single, toy_data(), TrainConfig(**AUXILIARY_SETTINGS), progress=False)
    start = build(DeterministicProbedVAE).state_dict()
    for key, value in single.state_dict().items():
        assert not torch.equal(value, start[key]), f"{key} did not train"
        assert torch.allclose(ranks[0]["aux_full"][key], value, rtol=1e-4, atol=1e-6), key
    history = [row["loss"] for row in ranks[0]["aux_full_history"]]
    assert history == pytest.approx([row["loss"] for row in result.history], rel=1e-5)

    for key, value in ranks[0]["aux_full"].items():  # interrupted after three steps and resumed: bit for bit
        assert torch.equal(ranks[0]["aux_resumed"][key], value), key
    assert _untimed(ranks[0]["aux_resumed_history"]) == _untimed(ranks[0]["aux_full_history"])


@pytest.mark.slow
def test_untwine_train_under_torchrun_writes_one_run_folder_from_rank_0(tmp_path, capsys):
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "untwine",
        "train", "vae", "--data", "dsprites", "--quick", "--subset", "1024", "--epochs", "1", "--distributed",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run folder:") == 1  # only rank 0 reports
    assert {p.name for p in out.iterdir()} >= {"checkpoint.pt", "config.json", "history.csv", "metrics.json", "figures"}
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    # the two ranks drew different noise: their random streams differ
    assert not torch.equal(state["ranks"][0]["rng"]["torch"], state["ranks"][1]["rng"]["torch"])

    # a two-process checkpoint does not resume in one process
    from untwine.cli import main

    assert main(["train", "vae", "--data", "dsprites", "--quick", "--subset", "1024", "--epochs", "2", "--out",
                 str(out), "--resume", "--no-progress"]) == 2  # fmt: skip
    assert "written by a run of 2 process(es)" in capsys.readouterr().err
