"""The checks that need a GPU, in one run (skipped where CUDA is absent, as on the CI machine).

* feedback alignment on CUDA: DFA/BDFA/FA step time vs BP's, ResNet-20, batch 128 (where a
  step is bound by kernel launches on a large GPU) and 1024 (`benchmarks.feedback`);
* localized learning on CUDA: half of ResNet-20's and of ResNet-18's layers localized vs BP,
  epoch time and saved-for-backward memory, batch 128 and 1024 (`benchmarks.local`; ResNet-18 is
  the paper's network);
* MGRIT on CUDA: solved to convergence, one training step should equal BP's step (relative
  difference of the parameter updates, with TF32 off and on), and the step time of BP, one-shot (2+1) and
  converged MGRIT on odenet:16-32-fc, 3×32×32, batch 128, in one process.

Device processes (`workers`/`distributed`) are CPU-only (gloo); nothing here starts them.

`python -m benchmarks.gpu`.
"""

from __future__ import annotations

import time

import torch

from benchmarks import feedback, local
from benchmarks.local import bundle
from suite.methods import METHODS, Context
from suite.models import build_model


def _step_time(method, batch, device, steps: int = 10) -> float:
    method.train_step(batch)
    local._sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        method.train_step(batch)
    local._sync(device)
    return (time.perf_counter() - t0) / steps


def compare_one_step(make, batch, init, device, tf32: bool) -> None:
    """One SGD step of converged MGRIT vs BP from the same weights: relative difference of the
    parameter updates, all parameters together and the worst single tensor."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        bp_model, bp = make("bp")
        mg_model, mg = make("mgrit", tol=1e-7, max_iters=20, probe_iters=0)
        bp.train_step(batch)
        out = mg.train_step(batch)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    with torch.no_grad():
        diffs, refs, worst = [], [], (0.0, "")
        for (name, p), q in zip(bp_model.named_parameters(), mg_model.parameters()):
            start = init[name].to(device)
            d, r = (q - start) - (p - start), p - start
            diffs.append(d.reshape(-1))
            refs.append(r.reshape(-1))
            worst = max(worst, (float(d.norm() / r.norm().clamp_min(1e-30)), name))
        total = float(torch.cat(diffs).norm() / torch.cat(refs).norm())
    print(f"  mgrit converged vs bp, one step, {device}, TF32 {'on' if tf32 else 'off'}: relative update "
          f"difference {total:.2e} (all parameters), worst tensor {worst[0]:.2e} ({worst[1]}); "
          f"forward iterations {float(out['mgrit/fwd_iters']):.0f}, adjoint {float(out['mgrit/adj_iters']):.0f}")


def mgrit_on(device: torch.device, model_name: str = "odenet:16-32-fc", batch: int = 128, timing: bool = True) -> None:
    data = bundle(2, batch, device)
    data.channels_last = False
    torch.manual_seed(0)
    init = build_model(model_name, (3, 32, 32), 10).state_dict()
    first = next(data.train_batches(0, 0))

    def make(name, **hp):
        model = build_model(model_name, (3, 32, 32), 10).to(device)
        model.load_state_dict(init)
        method = METHODS[name](METHODS[name].HParams(lr=0.1, momentum=0.0, weight_decay=0.0, **hp))
        method.setup(model, Context.for_data(data, epochs=1))
        return model, method

    for tf32 in ((False, True) if device.type == "cuda" else (False,)):
        compare_one_step(make, first, init, device, tf32)
    if not timing:
        return
    times = {"bp": _step_time(make("bp")[1], first, device), "mgrit 2+1": _step_time(make("mgrit", probe_iters=0)[1], first, device),
             "mgrit tol 1e-6": _step_time(make("mgrit", tol=1e-6, probe_iters=0)[1], first, device)}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"  {model_name}, batch {batch}, {name}: "
          + ", ".join(f"{k} {v * 1e3:.1f} ms/step" for k, v in times.items()))


def main() -> None:
    if not torch.cuda.is_available():
        print("  no CUDA device: skipped")
        return
    device = torch.device("cuda")
    print(f"  {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    mgrit_on(torch.device("cpu"), timing=False)  # the same check in float32 on the CPU, for reference
    mgrit_on(device)
    for batch in (128, 1024):
        feedback.main("cuda", batch_size=batch)
    for batch in (128, 1024):
        for model_name in ("resnet20", "resnet18"):
            local.main(model_name, "cuda", steps=10, batch=batch)


if __name__ == "__main__":
    main()
