#!/usr/bin/env python3
"""Writes tests/fixtures/optim_pytorch.txt: what PyTorch's optimizers and schedulers do on a
small, fixed problem, for tests/optim_pytorch.rs to replay without Python.

Run:  python3 scripts/optim_fixtures.py   (needs torch; writes into this repository's tests/)

The format is line based, one record per line, fields separated by single spaces:

    param <name> <shape, comma separated> <values...>     initial value of a parameter
    grad <step> <name> <values...>                         gradient fed at that step (absent
                                                           line: the parameter has no gradient)
    case <name>                                            starts an optimizer configuration
    after <step> <name> <values...>                        value after that step
    schedule <name> <lr after 0 steps> <after 1> ...       learning rates of a scheduler
    metrics <name> <metric fed at each step...>            metrics fed to a plateau scheduler

Values are printed with 9 significant digits, which round-trips every f32.
"""

import math
import pathlib

import torch

STEPS = 5
# (name, shape); "head.weight" gets no gradient at step 2, so optimizers must skip it there.
PARAMS = [("backbone.weight", (2, 3)), ("backbone.bias", (3,)), ("head.weight", (4,))]
SKIPPED = {(2, "head.weight")}


def fmt(values):
    assert all(math.isfinite(v) for v in values), "a fixture value is not finite"
    return " ".join(f"{float(v):.9g}" for v in values)


def flat(tensor):
    return tensor.detach().reshape(-1).tolist()


def make_problem():
    generator = torch.Generator().manual_seed(20240607)
    initial = {name: torch.randn(shape, generator=generator) for name, shape in PARAMS}
    grads = [
        {name: 0.5 * torch.randn(shape, generator=generator) for name, shape in PARAMS}
        for _ in range(STEPS)
    ]
    return initial, grads


def run_case(make_optimizer, initial, grads):
    params = {
        name: torch.nn.Parameter(value.clone()) for name, value in initial.items()
    }
    optimizer = make_optimizer(params)
    history = []
    for step in range(STEPS):
        for name, param in params.items():
            skipped = (step, name) in SKIPPED
            param.grad = None if skipped else grads[step][name].clone()
        optimizer.step()
        history.append({name: flat(p) for name, p in params.items()})
    return history


def backbone_and_head(params):
    return (
        [params["backbone.weight"], params["backbone.bias"]],
        [params["head.weight"]],
    )


def groups_sgd(params):
    backbone, head = backbone_and_head(params)
    return torch.optim.SGD(
        [{"params": backbone, "lr": 0.01, "weight_decay": 0.1}, {"params": head}],
        lr=0.1,
        momentum=0.9,
        foreach=False,
    )


def groups_adamw(params):
    backbone, head = backbone_and_head(params)
    return torch.optim.AdamW(
        [{"params": backbone, "lr": 1e-3}, {"params": head}],
        lr=1e-2,
        weight_decay=0.05,
        foreach=False,
    )


def every(constructor, **options):
    return lambda params: constructor(list(params.values()), foreach=False, **options)


CASES = [
    ("sgd", every(torch.optim.SGD, lr=0.1)),
    ("sgd_momentum", every(torch.optim.SGD, lr=0.1, momentum=0.9)),
    (
        "sgd_dampening_weight_decay",
        every(torch.optim.SGD, lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01),
    ),
    (
        "sgd_nesterov_weight_decay",
        every(torch.optim.SGD, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    ),
    ("adam", every(torch.optim.Adam, lr=0.01)),
    (
        "adam_weight_decay_amsgrad",
        every(
            torch.optim.Adam, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True
        ),
    ),
    ("adamw", every(torch.optim.AdamW, lr=0.01, weight_decay=0.1)),
    ("rmsprop", every(torch.optim.RMSprop, lr=0.01)),
    (
        "rmsprop_centered_momentum",
        every(
            torch.optim.RMSprop,
            lr=0.01,
            alpha=0.9,
            eps=1e-6,
            weight_decay=0.01,
            momentum=0.9,
            centered=True,
        ),
    ),
    ("groups_sgd", groups_sgd),
    ("groups_adamw", groups_adamw),
]

SCHEDULE_EPOCHS = 12
PLATEAU_METRICS = {
    "plateau_min": [1.0, 0.9, 0.895, 0.894, 0.9, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6],
    "plateau_max_abs": [0.1, 0.2, 0.25, 0.26, 0.2, 0.3, 0.3, 0.31, 0.3, 0.3, 0.3, 0.3],
}


def lr_sequence(make_scheduler, base_lr=0.1, metrics=None):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=base_lr)
    scheduler = make_scheduler(optimizer)
    lrs = [optimizer.param_groups[0]["lr"]]
    for epoch in range(SCHEDULE_EPOCHS):
        optimizer.step()
        if metrics is None:
            scheduler.step()
        else:
            scheduler.step(metrics[epoch])
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def warmup_then_cosine(optimizer):
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.25, total_iters=3)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=6, eta_min=0.01)
    return torch.optim.lr_scheduler.SequentialLR(
        optimizer, [warmup, cosine], milestones=[3]
    )


SCHEDULES = [
    ("step_lr", lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    (
        "multi_step_lr",
        lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[2, 5, 9], gamma=0.1),
    ),
    ("exponential_lr", lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.8)),
    (
        "cosine_annealing_lr",
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
    ),
    ("warmup_then_cosine", warmup_then_cosine),
]

PLATEAUS = [
    (
        "plateau_min",
        lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(
            o, mode="min", factor=0.5, patience=1, threshold=0.01, cooldown=1, min_lr=0.02
        ),
    ),
    (
        "plateau_max_abs",
        lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(
            o, mode="max", factor=0.1, patience=2, threshold=0.005, threshold_mode="abs"
        ),
    ),
]


def main():
    torch.set_default_dtype(torch.float32)
    initial, grads = make_problem()
    lines = [f"# Generated by scripts/optim_fixtures.py with torch {torch.__version__}; do not edit."]
    for name, shape in PARAMS:
        dims = ",".join(str(d) for d in shape)
        lines.append(f"param {name} {dims} {fmt(flat(initial[name]))}")
    for step in range(STEPS):
        for name, _ in PARAMS:
            if (step, name) not in SKIPPED:
                lines.append(f"grad {step} {name} {fmt(flat(grads[step][name]))}")
    for case, make_optimizer in CASES:
        lines.append(f"case {case}")
        for step, values in enumerate(run_case(make_optimizer, initial, grads)):
            for name, _ in PARAMS:
                lines.append(f"after {step} {name} {fmt(values[name])}")
    for name, make_scheduler in SCHEDULES:
        lines.append(f"schedule {name} {fmt(lr_sequence(make_scheduler))}")
    for name, make_scheduler in PLATEAUS:
        metrics = PLATEAU_METRICS[name]
        lines.append(f"metrics {name} {fmt(metrics)}")
        lines.append(f"schedule {name} {fmt(lr_sequence(make_scheduler, metrics=metrics))}")
    out = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "optim_pytorch.txt"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out} ({len(lines)} lines)")


if __name__ == "__main__":
    main()
