"""The cost model of docs/distributed.md: predicted data-parallel scaling of the MNIST CNN and
ResNet-18 on 2-64 nodes over 10 and 100 Gbit/s, with gradient buckets reduced by ring
all-reduce while backward runs.

    python3 scripts/distributed_model.py --alpha-us A --beta-ns-per-byte B --gflops R

--alpha-us and --beta-ns-per-byte are the loopback calibration (examples/distributed_bench
--calibrate on 2 ranks, fitted as T(S) = 2 alpha + S beta); --gflops is the training rate one
rank reached on the MNIST CNN (examples/distributed_bench, 1 thread). No dependency but Python.
"""

import argparse

# Per network: layers in backward order (last layer first) as (name, parameters, forward FLOPs
# per sample, whether backward computes the input gradient too).


def mnist_cnn():
    return [
        ("fc2", 128 * 10 + 10, 2 * 128 * 10, True),
        ("fc1", 3136 * 128 + 128, 2 * 3136 * 128, True),
        ("conv2", 32 * 64 * 9 + 64, 2 * 14 * 14 * 64 * 32 * 9, True),
        ("conv1", 32 * 9 + 32, 2 * 28 * 28 * 32 * 9, False),
    ]


def resnet18():
    layers = []

    def conv(name, cin, cout, k, size, first=False):
        layers.append((name, cin * cout * k * k, 2 * size * size * cout * cin * k * k, not first))
        layers.append((name + ".bn", 2 * cout, 4 * size * size * cout, True))

    conv("conv1", 3, 64, 7, 112, first=True)
    cin = 64
    for stage, (cout, size) in enumerate([(64, 56), (128, 28), (256, 14), (512, 7)], start=1):
        for block in range(2):
            name = f"layer{stage}.{block}"
            conv(name + ".conv1", cin, cout, 3, size)
            conv(name + ".conv2", cout, cout, 3, size)
            if block == 0 and cin != cout:
                conv(name + ".downsample", cin, cout, 1, size)
            cin = cout
    layers.append(("fc", 512 * 1000 + 1000, 2 * 512 * 1000, True))
    return list(reversed(layers))


def ring(bytes_, nodes, alpha, seconds_per_byte):
    """Ring all-reduce of one message: 2(N-1) steps, each a latency and 1/N of the data."""
    return 2 * (nodes - 1) * alpha + 2 * (nodes - 1) / nodes * bytes_ * seconds_per_byte


def step_time(layers, batch, rate, nodes, alpha, seconds_per_byte, bucket_bytes):
    """One step: forward, then backward layer by layer (last first); a bucket's all-reduce
    starts when its last gradient is ready and after the previous bucket's (one communication
    thread), and the step ends when backward and the last all-reduce are both done."""
    forward = sum(f for _, _, f, _ in layers) * batch / rate
    if nodes == 1:
        backward = sum(f * (2 if inp else 1) for _, _, f, inp in layers) * batch / rate
        return forward + backward, 0.0, 1
    clock, comm_free, filled, buckets = 0.0, 0.0, 0, 0
    for i, (_, params, flops, inp) in enumerate(layers):
        clock += flops * (2 if inp else 1) * batch / rate
        filled += 4 * params
        if filled >= bucket_bytes or i == len(layers) - 1:
            comm_free = max(comm_free, clock) + ring(filled, nodes, alpha, seconds_per_byte)
            filled, buckets = 0, buckets + 1
    end = max(clock, comm_free)
    return forward + end, end - clock, buckets


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha-us", type=float, required=True)
    parser.add_argument("--beta-ns-per-byte", type=float, required=True)
    parser.add_argument("--gflops", type=float, required=True, help="one rank's training rate")

    args = parser.parse_args()
    cpu_per_byte = args.beta_ns_per_byte * 1e-9
    networks = {
        # (latency per message, line rate); 90% of the line rate is reached, and every byte
        # also costs the reduction's memory traffic measured on loopback.
        "10 Gbit/s": (25e-6, 10e9 / 8 * 0.9),
        "100 Gbit/s": (10e-6, 100e9 / 8 * 0.9),
    }
    models = {"MNIST CNN, batch 64/rank": (mnist_cnn(), 64), "ResNet-18 224², batch 32/rank": (resnet18(), 32)}
    buckets = [b * 2**20 for b in (0.25, 0.5, 1, 2, 4, 8, 16, 25)]
    speeds = (("one thread per node, as measured", 1.0),
              ("a 32-core node at 16x one thread", 16.0),
              ("an accelerator-class node at 256x one thread", 256.0))
    for label, speed in speeds:
        rate = args.gflops * 1e9 * speed
        print(f"\n### {label}: {rate / 1e9:.0f} GFLOP/s per node\n")
        print("| model | network | bucket | " + " | ".join(f"{n} nodes" for n in (2, 4, 8, 16, 32, 64)) + " |")
        print("|---|---|---|" + "---|" * 6)
        for name, (layers, batch) in models.items():
            params = sum(p for _, p, _, _ in layers)
            single, _, _ = step_time(layers, batch, rate, 1, 0, 0, 0)
            for net, (alpha, bandwidth) in networks.items():
                per_byte = 1 / bandwidth + cpu_per_byte
                cells, picks = [], set()
                for nodes in (2, 4, 8, 16, 32, 64):
                    times = {b: step_time(layers, batch, rate, nodes, alpha, per_byte, b)[0] for b in buckets}
                    fastest = min(times.values())
                    # Of the buckets within 1% of the fastest, the largest (fewest messages).
                    best = max(b for b, t in times.items() if t <= 1.01 * fastest)
                    t, exposed, _ = step_time(layers, batch, rate, nodes, alpha, per_byte, best)
                    picks.add(best / 2**20)
                    mark = "" if exposed <= 0.05 * t else "*"
                    cells.append(f"{nodes * single / t:.1f}x{mark}")
                pick = "/".join(f"{p:g}" for p in sorted(picks))
                print(f"| {name} ({4 * params / 1e6:.1f} MB) | {net} | {pick} MB | " + " | ".join(cells) + " |")
    print("\n`*`: more than 5% of the step is communication that backward did not hide.")


if __name__ == "__main__":
    main()
