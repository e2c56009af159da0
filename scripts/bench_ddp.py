"""PyTorch's half of scripts/bench_distributed.sh: MNIST CNN training throughput in one process,
or with DistributedDataParallel over gloo on this machine, one thread per process.

    python3 scripts/bench_ddp.py --ranks 1
    python3 scripts/bench_ddp.py --ranks 2

The model, optimizer, data and batch per rank are those of examples/distributed_bench.rs:
striate's MNIST CNN (conv 1->32, pool, conv 32->64, pool, dense 3136->128->10), SGD with
momentum 0.9, 64 MNIST images per rank per step; a warm-up pass, then a timed pass of --steps
steps. Each rank reads MNIST from $STRIATE_DATA/mnist.
"""

import argparse
import gzip
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


class MnistCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def run(rank, ranks, steps, batch, port):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if ranks > 1:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group("gloo", rank=rank, world_size=ranks)
    root = os.path.join(os.environ.get("STRIATE_DATA", "../shared/data"), "mnist")
    images = read_idx(os.path.join(root, "train-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(root, "train-labels-idx1-ubyte.gz"))
    n = steps * batch * ranks
    x_all = (torch.from_numpy(images[:n].astype(np.float32) / 255.0) - 0.1307) / 0.3081
    x_all = x_all.unsqueeze(1)
    y_all = torch.from_numpy(labels[:n].astype(np.int64))
    model = MnistCnn()
    if ranks > 1:
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def epoch(seed):
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=g)[rank::ranks]  # DistributedSampler's shard
        for s in range(steps):
            idx = order[s * batch : (s + 1) * batch]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    epoch(0)  # warm-up
    if ranks > 1:
        dist.barrier()
    started = time.perf_counter()
    epoch(1)
    if ranks > 1:
        dist.barrier()
    seconds = time.perf_counter() - started
    if rank == 0:
        print(
            f"pytorch {torch.__version__}: {ranks} process(es) x 1 thread"
            f"{' (DDP, gloo)' if ranks > 1 else ''}, batch {batch} per rank: "
            f"{steps * batch * ranks / seconds:.1f} samples/s ({1e3 * seconds / steps:.1f} ms per step)",
            flush=True,
        )
    if ranks > 1:
        dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--port", type=int, default=29517)
    args = parser.parse_args()
    if args.ranks == 1:
        run(0, 1, args.steps, args.batch_size, args.port)
    else:
        mp.spawn(run, args=(args.ranks, args.steps, args.batch_size, args.port), nprocs=args.ranks)


if __name__ == "__main__":
    main()
