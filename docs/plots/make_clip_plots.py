"""Draw the per-singular-value error of :func:`spectral_ops.clip` near the threshold.

Writes ``docs/_static/clip_threshold_error.png``. The input is a 128 x 512
matrix built by :func:`spectral_ops.testing.from_spectrum` with ``tau = 1`` and
singular values spread on both sides of the threshold:

* 48 values with ``(s - tau) / tau`` evenly spaced in [-1, 3] (so ``s`` from 0
  to ``4 tau``), and
* a dense cluster of 80 values with ``(s - tau) / tau = +-10^k``, ``k`` evenly
  spaced in [-7, -1] (40 on each side).

Left panel: float32 NumPy input, methods ``"polar"``, ``"newton"`` and
``"svd"``. Right panel: the same matrix in bfloat16 (PyTorch on the CPU),
methods ``"polar"`` and ``"newton"``. Plotted is, for every singular triple
``(s_i, u_i, v_i)`` of the input *as rounded to its dtype* (float64 SVD of the
rounded matrix), the error ``|u_i^T Y v_i - min(s_i, tau)| / tau`` against
``(s_i - tau) / tau``. The dashed line is ``|s - tau| / tau``, the error of a
wrong sign decision (the output keeps ``s`` where it should be ``tau``, or the
reverse); the dotted line is half of it, the error of an undecided sign (0).
Errors below 1e-10 are drawn at 1e-10. Run it from the repository root after
changing the clip iterations, and commit the PNG:

    python docs/plots/make_clip_plots.py

It also prints the numbers quoted in docs/clip.md, the figure's and those of
its table "Measured accuracy" (:func:`measured_table`). The Sphinx build does
not run this script.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from spectral_ops import clip, clip_plan  # noqa: E402
from spectral_ops.testing import from_spectrum, make_matrix  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "_static" / "clip_threshold_error.png"
TAU = 1.0
SHAPE = (128, 512)
FLOOR_ERR = 1e-10  # errors below this are drawn at this value (log axis)


def spectrum() -> np.ndarray:
    spread = np.linspace(-1.0, 3.0, 48)
    k = np.linspace(-7.0, -1.0, 40)
    cluster = np.concatenate([10.0**k, -(10.0**k)])
    s = TAU * (1.0 + np.concatenate([spread, cluster]))
    return np.sort(np.maximum(s, 0.0))[::-1]


def per_value_error(b64: np.ndarray, y64: np.ndarray):
    """``(s - tau) / tau`` and ``|u_i^T Y v_i - min(s_i, tau)| / tau`` per triple."""
    u, s, vh = np.linalg.svd(b64, full_matrices=False)
    d = np.einsum("ji,jk,ik->i", u, y64, vh)
    exact = np.minimum(s, TAU)
    ref = (u * exact) @ vh
    rel = np.linalg.norm(y64 - ref) / np.linalg.norm(ref)
    return (s - TAU) / TAU, np.abs(d - exact) / TAU, rel, np.linalg.norm(y64, 2) / TAU


def summarise(label, x, err, rel, norm):
    below = err[x < -1e-4].max()
    band = err[np.abs(x) <= 1e-4]
    above = err[x > 1e-4]
    print(f"{label:24s} rel_error {rel:.2e}  ||Y||_2/tau - 1 {norm - 1:+.2e}  "
          f"err/tau: below tau(1 - 1e-4) max {below:.2e}; |s - tau| <= 1e-4 tau "
          f"{band.min():.2e} to {band.max():.2e} (peak at (s - tau)/tau = "
          f"{x[np.abs(x) <= 1e-4][band.argmax()]:+.1e}); above tau(1 + 1e-4) "
          f"{above.min():.2e} to {above.max():.2e}")


def _measure(b, tau, method, dtype):
    """Relative Frobenius error against the clip of the float64 SVD of the input
    as rounded to ``dtype``, and ``||Y||_2 / tau``."""
    if dtype == "bfloat16":
        x = torch.from_numpy(b).to(torch.bfloat16)
        b64 = x.to(torch.float64).numpy()
        y = clip(x, tau, method=method).to(torch.float64).numpy()
    else:
        x = b.astype(dtype)
        b64 = x.astype(np.float64)
        y = clip(x, tau, method=method).astype(np.float64)
    u, s, vh = np.linalg.svd(b64, full_matrices=False)
    ref = (u * np.minimum(s, tau)) @ vh
    return np.linalg.norm(y - ref) / np.linalg.norm(ref), np.linalg.norm(y, 2) / tau


def _inputs(shape):
    """The inputs of the table: (name, B as float64, tau)."""
    g = make_matrix("gaussian", shape, seed=0)
    sg = np.linalg.svd(g, compute_uv=False)
    rng = np.random.default_rng(0)
    r = min(shape)
    half = np.sort(np.concatenate([1 + 0.01 * rng.uniform(-1, 1, r // 2),
                                   np.geomspace(5, 1e-3, r - r // 2)]))[::-1]
    grad = make_matrix("gradient", shape, seed=0)
    sgr = np.linalg.svd(grad, compute_uv=False)
    return [("gaussian, tau = median", g, float(np.median(sg))),
            ("gaussian, tau = s_max / 10", g, float(sg[0] / 10)),
            ("gaussian, s_max = 1e3 tau", g, float(sg[0] / 1e3)),
            ("half within 1% of tau", from_spectrum(half, shape, seed=0), 1.0),
            ("gradient, tau = s_max / 10", grad, float(sgr[0] / 10)),
            ("gradient, s_max = 1e3 tau", grad, float(sgr[0] / 1e3))]


def measured_table(shape=(256, 1024)) -> None:
    """The rows of docs/clip.md's table "Measured accuracy"."""
    print(f"measured accuracy, {shape[0]} x {shape[1]}: rel. error, ||Y||_2 / tau - 1")
    for name, b, tau in _inputs(shape):
        for dtype, methods in (("float32", ("polar", "newton", "svd")),
                               ("float64", ("polar", "newton")),
                               ("bfloat16", ("polar", "newton"))):
            for method in methods:
                rel, norm = _measure(b, tau, method, dtype)
                print(f"  {name:28s} {dtype:9s} {method:7s} {rel:.2e}  {norm - 1:+.2e}")


def main() -> None:
    s = spectrum()
    b = from_spectrum(s, SHAPE, seed=0)

    b32 = b.astype(np.float32)
    b32_64 = b32.astype(np.float64)
    runs32 = []
    for method in ("polar", "newton", "svd"):
        plan = clip_plan(b32, TAU, method=method)
        print(f"float32 {method}: {plan}")
        if method == "polar":  # P's design: lower end 1 / (2 rho), and its bound
            print(f"  rho {0.5 / plan.polar.lower:.3g}, P bound {plan.polar.error_bound:.1e}")
        y = clip(b32, TAU, method=method).astype(np.float64)
        runs32.append((method, *per_value_error(b32_64, y)))

    b16 = torch.from_numpy(b).to(torch.bfloat16)
    b16_64 = b16.to(torch.float64).numpy()
    runs16 = []
    for method in ("polar", "newton"):
        print(f"bfloat16 {method}: {clip_plan(b16, TAU, method=method)}")
        y = clip(b16, TAU, method=method)
        assert y.dtype == torch.bfloat16
        runs16.append((method, *per_value_error(b16_64, y.to(torch.float64).numpy())))

    styles = {"polar": ("C0", "o", 3.5), "newton": ("C1", "s", 3.0), "svd": ("C2", "^", 3.0)}
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8), constrained_layout=True, sharey=True)
    for ax, runs, title in ((axes[0], runs32, "float32 (NumPy)"),
                            (axes[1], runs16, "bfloat16 (PyTorch, CPU)")):
        for method, x, err, rel, norm in runs:
            summarise(f"{title.split()[0]} {method}", x, err, rel, norm)
            color, marker, size = styles[method]
            ax.plot(x, np.maximum(err, FLOOR_ERR), ls="none", marker=marker, ms=size,
                    mfc="none", mew=0.8, color=color, label=f"{method} (rel. error {rel:.1e})")
        xs = np.concatenate([-np.geomspace(1.0, 1e-8, 400), np.geomspace(1e-8, 3.0, 400)])
        ax.plot(xs, np.maximum(np.abs(xs), FLOOR_ERR), color="0.4", lw=0.8, ls="--",
                label=r"$|s - \tau| / \tau$ (wrong sign)")
        ax.plot(xs, np.maximum(np.abs(xs) / 2, FLOOR_ERR), color="0.4", lw=0.8, ls=":",
                label=r"$|s - \tau| / (2\tau)$ (sign 0)")
        ax.axvline(0.0, color="0.6", lw=0.6)
        ax.set_xscale("symlog", linthresh=1e-7, linscale=0.5)
        ax.set_xlim(-1.2, 3.5)
        ax.set_xticks([-1, -1e-2, -1e-4, -1e-6, 0, 1e-6, 1e-4, 1e-2, 1])
        ax.set_yscale("log")
        ax.set_ylim(FLOOR_ERR / 2, 2.0)
        ax.set_xlabel(r"$(s_i - \tau)/\tau$")
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize=7.0, frameon=False)
    axes[0].set_ylabel(r"$|u_i^T Y v_i - \min(s_i, \tau)| / \tau$")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)")
    measured_table()
    measured_table((128, 512))


if __name__ == "__main__":
    main()
