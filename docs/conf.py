"""Sphinx configuration of the spectral_ops documentation.

Build from the repository root with warnings as errors::

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

import importlib

import spectral_ops

# The optimizer pages document spectral_ops.adapters.torch and .optax, which
# import PyTorch, JAX and optax. Where they are installed (the test extras) the
# real modules are used; an install with only the docs extra mocks the missing
# ones so that the build still succeeds.
autodoc_mock_imports = []
for _name in ("torch", "jax", "optax"):
    try:
        importlib.import_module(_name)
    except ImportError:
        autodoc_mock_imports.append(_name)

project = "spectral-ops"
author = "spectral-ops developers"
copyright = "spectral-ops developers"
version = spectral_ops.__version__
release = spectral_ops.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "plots", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# MyST: $...$ and $$...$$ math, LaTeX environments such as align, and {{ name }}
# substitutions (the numbers computed from the code, below).
myst_enable_extensions = ["dollarmath", "amsmath", "substitution"]
myst_heading_anchors = 3

# autosummary writes one page per object into api/generated/ (not committed).
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True

# numpydoc renders the docstrings; the class pages list their attributes from
# the docstring's Attributes section, so no automatic member tables.
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

html_theme = "pydata_sphinx_theme"
html_title = f"spectral-ops {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_show_sourcelink = False

# --- numbers from the code ---------------------------------------------------------
#
# Every product, flop and step count, design bound, coefficient and design
# constant that the pages state is computed here, at build time, from the plans
# the library builds (spectral_ops.polar_plan, clip_plan, power_plan) and from
# its coefficient and routing modules. The pages write them as MyST
# substitutions, {{ name }}; a page that names an unknown one fails the build
# (-W). Measured numbers (timings, errors) are not here: the pages cite the
# script or benchmark run they come from.

import math
from fractions import Fraction

import numpy as np

from spectral_ops import (clip_plan, polar_express_coefficients, polar_plan, power_plan,
                          routing)
from spectral_ops.coefficients import CUSHION, JORDAN_COEFFICIENTS, SAFETY, schedule_error
from spectral_ops.kernels import matpow_count
from spectral_ops.schedules import dynmuon_schedule

REF = (256, 1024)  # the pages' reference shape
SHAPES = ((128, 512), (256, 1024), (512, 512), (1024, 4096))
ITERATION = {"gram": "Gram Newton-Schulz", "polar_express": "Polar Express"}


def _zeros(shape, dtype=np.float32):
    """An input for the plans, which read its shape, dtype and device (clip also
    ``||B||_F / tau``, which is 1, its smallest value, for zeros)."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def _with_norm(norm, shape=REF):
    """A float32 input with ``||B||_F = norm`` (one nonzero entry), for clip_plan(B, 1.0)."""
    B = np.zeros(shape, np.float32)
    B[0, 0] = norm
    return B


#: the bound rho on s_max / tau of the pages' host designs: about what a Gaussian
#: matrix clipped at its median singular value reads (see clip.md)
CLIP_HOST_RHO = 4.0


def _clip_host(shape, rho, dtype=np.float32):
    """clip's "polar" plan where the host reads rho: ||B||_F / tau and the tight
    bound both rho, as for a rank-one input (the designs follow the tight bound)."""
    import array_api_compat.numpy as xnp

    return routing.plan_clip(xnp, _zeros(shape, dtype), dtype, "polar", None, 1e-3, None,
                             None, rho, tight=rho)


def _clip_unread(shape, dtype=np.float32):
    """clip's "polar" plan where nothing is read (accelerators, jax.jit): rho = 1 / floor."""
    import array_api_compat.numpy as xnp

    return routing.plan_clip(xnp, _zeros(shape, dtype), dtype, "polar")


def _key(shape):
    return f"{shape[0]}x{shape[1]}"


def _gflop(flops):
    g = flops / 1e9
    return f"{g:.2f}" if g < 10 else f"{g:.1f}"


def _sci(x, digits=2):
    """``x`` as the math $a\\times 10^{b}$ (MyST renders math inside a substitution)."""
    e = math.floor(math.log10(abs(x)))
    a = round(x / 10**e, digits - 1)
    if abs(a) >= 10:
        a, e = a / 10, e + 1
    return f"${a:.{digits - 1}f}\\times 10^{{{e}}}$"


def _tex10(x):
    """A power of ten in LaTeX, ``10^{k}``."""
    k = round(math.log10(x))
    assert math.isclose(x, 10.0**k), x
    return f"10^{{{k}}}"


def _span(values, fmt="{}"):
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    if lo == hi:
        return lo
    return f"{lo} or {hi}" if isinstance(min(values), int) and max(values) == min(values) + 1 \
        else f"{lo} to {hi}"


def _p_rule(wide_gram, short=False):
    """How clip and power compute their polar factor, as their plans say."""
    if wide_gram:
        return "Polar Express (or Gram Newton-Schulz where the aspect ratio pays)" if short \
            else ("Polar Express, or Gram Newton-Schulz where the aspect ratio pays (as "
                  "`polar`'s `\"auto\"` decides)")
    return "Polar Express" if short else (
        "Polar Express (not Gram Newton-Schulz: its error outside the band, which "
        "`polar` does not promise, would be multiplied back in)")


def _last_m(dtype, steps):
    """The largest short side m whose default Polar Express schedule has ``steps`` steps."""
    lo, hi = 1, 1 << 16
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if polar_plan(_zeros((mid, mid), dtype), method="polar_express").steps <= steps:
            lo = mid
        else:
            hi = mid
    return lo


class _DtypeNames:
    """An array namespace that only names the dtypes: the routing functions build
    bfloat16 plans with it, which NumPy (no bfloat16) cannot."""

    float16, bfloat16, float32, float64 = "float16", "bfloat16", "float32", "float64"


def _bf16_polar(shape):
    return routing.plan_polar(_DtypeNames, _zeros(shape), "bfloat16", "polar_express")


def _bf16_power(shape, p):
    return routing.plan_power(_DtypeNames, _zeros(shape), "bfloat16", Fraction(p), "newton")


def _check_bf16_plans():
    """Where PyTorch is installed, the bfloat16 plans above are those of real tensors."""
    try:
        import torch
    except ImportError:
        return
    for shape in ((256, 1024), (128, 2048)):
        t = torch.zeros(shape, dtype=torch.bfloat16)
        assert polar_plan(t, method="polar_express") == _bf16_polar(shape), shape
        assert power_plan(t, Fraction(1, 2), method="newton") == _bf16_power(shape, "1/2")


def _polar_numbers(S):
    for method, name in (("polar_express", "pe"), ("jordan", "jordan"), ("gram", "gram")):
        plan = polar_plan(_zeros(REF), method=method)
        S[f"{name}_steps_{_key(REF)}"] = plan.steps
        S[f"{name}_products_{_key(REF)}"] = plan.matmuls
        S[f"{name}_gflop_{_key(REF)}"] = _gflop(plan.flops)
    S["pe_gflop_512x512"] = _gflop(polar_plan(_zeros((512, 512)), method="polar_express").flops)
    pe = polar_plan(_zeros(REF), method="polar_express")
    pe64 = polar_plan(_zeros(REF, np.float64), method="polar_express")
    T = pe.steps
    S["pe_steps"], S["pe_steps_f64"] = T, pe64.steps
    S["pe_products_per_step"] = pe.matmuls // T
    S["pe_lower_256"] = _sci(pe.lower, 1)
    S["pe_bound_f32_128"] = _sci(polar_plan(_zeros((128, 512)), method="polar_express")
                                 .error_bound)
    S["pe_bound_f32_256"] = _sci(pe.error_bound)
    S["pe_bound_f32_256_3"] = _sci(pe.error_bound, 3)
    S["pe_bound_f64_256"] = _sci(pe64.error_bound)
    S["pe_max_m_f32"], S["pe_steps_f32_above"] = _last_m(np.float32, T), T + 1
    S["pe_max_m_f64"], S["pe_steps_f64_above"] = _last_m(np.float64, pe64.steps), pe64.steps + 1

    # the Polar Express construction and Muon's quintic
    S["pe_cushion"] = repr(CUSHION)
    S["pe_safety"] = f"{SAFETY:g}"
    a, b, c = polar_express_coefficients(1, 1e-3, safety=1.0)[0]
    S["pe_first_triple"] = f"$({a:.4f},\\ {b:.4f},\\ {c:.4f})$"
    S["pe_first_a"] = f"{a:.4f}"
    for t in range(1, 9):
        err = schedule_error(1e-3, t)
        S[f"sched_err_{t}"] = f"{err:.3f}" if err >= 0.01 else _sci(err)
    S["jordan_triple"] = "$({:.4f},\\ {:.4f},\\ {:.4f})$".format(*JORDAN_COEFFICIENTS)
    S["jordan_a"] = f"{JORDAN_COEFFICIENTS[0]:.4f}"
    S["jordan_steps"] = polar_plan(_zeros(REF), method="jordan").steps
    S["jordan_gain"] = f"{JORDAN_COEFFICIENTS[0] ** S['jordan_steps']:.0f}"

    # Gram Newton-Schulz: the closed form polar.md states, checked against the count
    for steps in range(4, 13):
        k, f = routing.count_polar("gram", 1, 3, steps)  # m^2 n = 3, m^3 = 1
        assert (k, f) == (4 * steps - 3, 12 * 3 + 8 * steps - 18), (steps, k, f)
    gram = polar_plan(_zeros(REF), method="gram")
    S["gram_restart_after"] = gram.restart_after
    S["gram_first_growth"] = f"{gram.coefficients[0][0] ** 2:.0f}"

    def ratio(aspect):  # flops of gram over polar_express at T steps
        return (routing.count_polar("gram", 8, 8 * aspect, T)[1]
                / routing.count_polar("polar_express", 8, 8 * aspect, T)[1])

    for aspect in (2, 3, 4, 8):
        S[f"gram_ratio_a{aspect}"] = f"{ratio(aspect):.2f}"
    S["gram_square_cost"] = f"{ratio(1):.1f}"
    S["gram_fewer_a4"] = f"{1 / ratio(4):.2f}"
    # the aspect ratio n/m at which gram costs r times polar_express's flops:
    # (12 a + 8T - 18) / (T (4 a + 2)) = r  <=>  a = (8T - 18 - 2rT) / (4rT - 12)
    r = routing.GRAM_FLOP_RATIO
    S["gram_even_aspect"] = f"{(8 * T - 18 - 2 * T) / (4 * T - 12):.1f}"
    S["gram_auto_aspect"] = f"{(8 * T - 18 - 2 * r * T) / (4 * r * T - 12):.1f}"
    S["gram_flop_ratio"] = f"{r:g}"
    S["gram_min_work_accelerator"] = f"{routing.GRAM_MIN_WORK_ACCELERATOR:.1e}"
    # the floor below which auto leaves Gram Newton-Schulz, where the routing has one
    min_floor = getattr(routing, "GRAM_MIN_FLOOR", None)
    S["gram_floor_rule"] = "" if min_floor is None else (
        f"the `floor` is at least ${_tex10(min_floor['float32'])}$ in float32 "
        f"(${_tex10(min_floor['float64'])}$ in float64; its Gram matrix holds a singular "
        f"value $s$ as $s^2$ and loses those below about $\\sqrt{{\\varepsilon}}\\,s_{{max}}$), ")

    # auto's CPU choice between "eigh" and the iteration (routing.eigh_pays)
    S["eigh_gemms"] = f"{routing.EIGH_GEMMS:g}"
    S["eigh_gemms_m"] = f"{routing.EIGH_GEMMS_M:g}"
    S["eigh_overhead_side"] = routing.EIGH_OVERHEAD_SIDE
    routes = []
    for shape in ((32, 32), (16, 64, 64), (256, 256), (512, 512), (1024, 1024), (2048, 2048),
                  (256, 512), (256, 1024), (1024, 4096), (16, 256, 1024)):
        routes.append(f"{' x '.join(map(str, shape))} `{polar_plan(_zeros(shape)).method}`")
    S["eigh_auto_routes"] = ", ".join(routes)
    loose = polar_plan(_zeros((1024, 4096)), tol=0.3, floor=1e-2)
    S["muon_band_route_1024x4096"] = f"`{loose.method}`, {loose.matmuls} products"

    # QDWH: iterations, and how many take the QR form (c > 100)
    for name, dtype in (("f32", np.float32), ("f64", np.float64)):
        q = polar_plan(_zeros(REF, dtype), method="qdwh")
        S[f"qdwh_steps_{name}"] = q.steps
        S[f"qdwh_qr_{name}"] = sum(w[2] > 100 for w in q.qdwh_weights)
        S[f"qdwh_solve_{name}"] = q.steps - S[f"qdwh_qr_{name}"]

    # bfloat16
    for shape in ((256, 1024), (128, 2048)):
        S[f"pe_steps_bf16_{_key(shape)}"] = _bf16_polar(shape).steps
    S["pe_bound_bf16_128x2048"] = _sci(_bf16_polar((128, 2048)).error_bound, 3)


def _clip_numbers(S):
    lower32, tol32 = routing.SIGN_DESIGN["float32"]
    lower64, tol64 = routing.SIGN_DESIGN["float64"]
    gap = routing.SIGN_GAP
    base = gap / lower32  # up to this ||B||_F / tau the designs are those of ratio 1
    S["clip_base_ratio"] = f"{base:g}"
    S["clip_sign_gap"] = f"${_tex10(gap)}$"
    S["clip_sign_tol_f32"] = f"${_tex10(tol32)}$"
    S["clip_sign_tol_f64"] = f"${_tex10(tol64)}$"
    S["clip_sign_design_f32"] = f"$\\ell_\\Sigma = \\min({_tex10(lower32)},\\ {_tex10(gap)}/\\rho)$"
    S["clip_sign_design_f64"] = f"$\\min({_tex10(lower64)},\\ {_tex10(gap)}/\\rho)$"
    S["clip_sign_gap_tau"] = f"$|s - \\tau| \\ge {_tex10(gap)}\\,\\tau$"
    S["clip_max_ratio_f32"] = f"${_tex10(routing.MAX_MATRIX_RATIO['float32'])}$"
    S["clip_max_ratio_f64"] = f"${_tex10(routing.MAX_MATRIX_RATIO['float64'])}$"
    S["clip_host_rho"] = f"{CLIP_HOST_RHO:g}"
    for shape in SHAPES:
        cp = _clip_host(shape, CLIP_HOST_RHO)
        ca = _clip_unread(shape)
        cn = clip_plan(_zeros(shape), 1.0, method="newton")
        pe = polar_plan(_zeros(shape), method="polar_express")
        k = _key(shape)
        S[f"clip_steps_{k}"] = f"{cp.polar_steps} + {cp.sign_steps}"
        S[f"clip_products_{k}"] = cp.matmuls
        S[f"clip_gflop_{k}"] = _gflop(cp.flops)
        S[f"clip_p_{k}"] = ITERATION[cp.polar_iteration]
        S[f"clip_vs_polar_{k}"] = f"{cp.flops / pe.flops:.2f}"
        S[f"clip_unread_steps_{k}"] = f"{ca.polar_steps} + {ca.sign_steps}"
        S[f"clip_unread_products_{k}"] = ca.matmuls
        S[f"clip_unread_vs_polar_{k}"] = f"{ca.flops / pe.flops:.2f}"
        S[f"clip_newton_steps_{k}"] = f"{cn.polar_steps} + {cn.sign_steps}"
        S[f"clip_newton_products_{k}"] = cn.matmuls
    # which iteration computes P: from the plans, at aspect ratio 4 and 1
    wide_gram = clip_plan(_zeros(REF), 1.0, method="polar").polar_iteration == "gram"
    S["clip_p_rule"] = _p_rule(wide_gram)
    S["clip_p_short"] = _p_rule(wide_gram, short=True)
    S["clip_asv_note"] = (
        "$P$ was computed by Polar Express at every aspect ratio (52 products at "
        "$256 \\times 1024$, where Gram Newton-Schulz now takes aspect ratio 4), and "
        if wide_gram else "")
    polish = getattr(routing, "POLISH_ABOVE", None)
    eps32 = 2.0**-23
    S["clip_polish"] = "" if polish is None else (
        f"Where $\\varepsilon_{{32}}\\,\\|B\\|_F/\\tau > {_tex10(polish)}$ (float32 inputs "
        f"with $\\|B\\|_F/\\tau > {polish / eps32:.0f}$, or a given `ratio` above that), the "
        f"projector refinement and the last product (3 of the products) run in float64, "
        f"where the array library computes in float64 there: in float32 their round-off, "
        f"about $\\varepsilon_{{32}}\\,s_{{max}}$, would be a relative "
        f"$\\varepsilon_{{32}}\\,s_{{max}}/\\tau$ at $\\tau$.")
    S["clip_vs_polar_a4"] = S["clip_vs_polar_256x1024"]
    S["clip_vs_polar_square"] = S["clip_vs_polar_512x512"]
    S["clip_unread_vs_polar_a4"] = S["clip_unread_vs_polar_256x1024"]
    S["clip_unread_vs_polar_square"] = S["clip_unread_vs_polar_512x512"]
    cp = _clip_host(REF, CLIP_HOST_RHO)
    cp64 = _clip_host(REF, CLIP_HOST_RHO, np.float64)
    S["clip_sign_steps"] = cp.sign_steps
    S["clip_sign_bound_1024"] = _sci(_clip_host((1024, 4096), CLIP_HOST_RHO).sign.error_bound, 1)
    S["clip_p_bound"] = _sci(cp.polar.error_bound, 1)
    S["clip_p_steps_f32"] = cp.polar_steps
    S["clip_p_steps_f64"] = cp64.polar_steps
    S["clip_steps_f64"] = f"{cp64.polar_steps} + {cp64.sign_steps}"
    S["clip_products_f64"] = cp64.matmuls
    S["clip_sign_steps_f64_128"] = _clip_host((128, 512), CLIP_HOST_RHO, np.float64).sign_steps
    S["clip_sign_steps_f64_256"] = cp64.sign_steps
    cn = clip_plan(_zeros(REF), 1.0, method="newton")
    S["clip_newton_steps_f32"] = cn.polar_steps
    S["clip_newton_steps_f64"] = clip_plan(_zeros(REF, np.float64), 1.0,
                                           method="newton").polar_steps
    S["clip_newton_products"] = cn.matmuls
    ce = clip_plan(_zeros(REF), 1.0, method="polar", eps=0.1)
    S["clip_eps_products"], S["clip_eps_gflop"] = ce.matmuls, _gflop(ce.flops)

    # the designs against the bound rho read on the host; a rank-one input reads
    # rho = ||B||_F / tau exactly (rounded up to a quarter octave by clip_plan)
    assert clip_plan(_with_norm(CLIP_HOST_RHO / 1.01), 1.0, method="polar") == cp
    for ratio in (1, 4, 10, 100, 1000, 10000):
        cr = _clip_host(REF, ratio)
        S[f"clip_ratio_{ratio}_steps"] = f"{cr.polar_steps} + {cr.sign_steps}"
        S[f"clip_ratio_{ratio}_products"] = cr.matmuls
        S[f"clip_ratio_{ratio}_gflop"] = _gflop(cr.flops)
    cu = _clip_unread(REF)
    S["clip_unread_steps"] = f"{cu.polar_steps} + {cu.sign_steps}"
    S["clip_unread_products"] = cu.matmuls
    S["clip_unread_gflop"] = _gflop(cu.flops)

    # the example of clip.md: a Gaussian 256 x 1024 input, tau = 30
    B = np.random.default_rng(0).standard_normal(REF).astype(np.float32)
    c = clip_plan(B, 30.0, method="polar")
    s64 = np.linalg.svd(B.astype(np.float64), compute_uv=False)
    S["clip_example_ratio"] = f"{np.linalg.norm(B.astype(np.float64)) / 30.0:.0f}"
    S["clip_example_smax"] = f"{s64[0] / 30.0:.2f}"
    S["clip_example_rho"] = f"{0.5 / c.polar.lower:.3g}"  # P's lower end is 1 / (2 rho)
    tau_median = float(np.median(s64))
    S["clip_gauss_rho"] = f"{0.5 / clip_plan(B, tau_median, method='polar').polar.lower:.3g}"
    S["clip_example_steps"] = f"{c.polar_steps} + {c.sign_steps}"
    S["clip_example_products"] = c.matmuls
    S["clip_example_p"] = ITERATION[c.polar_iteration]


def _power_numbers(S):
    def plan(p, shape=REF, dtype=np.float32, **kw):
        return power_plan(_zeros(shape, dtype), Fraction(p), method="newton", **kw)

    positive = ("1/4", "1/3", "1/2", "2/3", "3/4")
    for shape in ((256, 1024), (512, 512)):
        pe = polar_plan(_zeros(shape), method="polar_express")
        for p in positive + ("-1/4",):
            pp = plan(p, shape)
            k = f"{p.replace('/', '_').replace('-', 'm')}_{_key(shape)}"
            S[f"power_{k}"] = f"{pp.polar_steps} + {pp.root_steps}, {pp.matmuls}, " \
                              f"{_gflop(pp.flops)}"
            S[f"power_route_{k}"] = f"{pp.route}, {pp.root}"
            S[f"power_vs_polar_{k}"] = f"{pp.flops / pe.flops:.2f}"
        S[f"power_vs_polar_{_key(shape)}"] = _span(
            [plan(p, shape).flops / pe.flops for p in positive], "{:.1f}")
    S["power_vs_polar_a4"] = S.pop("power_vs_polar_256x1024")
    S["power_vs_polar_square"] = S.pop("power_vs_polar_512x512")
    S["power_newton_steps_f32"] = _span([plan(p).root_steps for p in positive])
    # what Newton's coupled iteration would need on the same design interval and bound
    lower = routing.design_lower(routing.POWER_FLOOR["float32"], REF[0],
                                 float(np.finfo(np.float32).eps))
    S["power_newton_equivalent_f32"] = _span(
        [routing.newton_steps(lower, Fraction(p).denominator, routing.ROOT_TOL["float32"])
         for p in positive])
    S["power_root_tol_f32"] = f"${_tex10(routing.ROOT_TOL['float32'])}$"
    S["power_minimax_min_floor"] = f"${_tex10(routing.MINIMAX_ROOT_MIN_FLOOR['float32'])}$"
    S["power_root_tol_f64"] = f"${_tex10(routing.ROOT_TOL['float64'])}$"
    pe = polar_plan(_zeros(REF), method="polar_express")
    half = plan("1/2")
    S["power_half_route"] = f'`"{half.route}"`'
    S["power_half_steps"] = half.polar_steps
    S["power_half_newton"] = half.root_steps
    S["power_half_products"] = half.matmuls
    S["power_half_vs_polar"] = f"{half.flops / pe.flops:.1f}"
    S["power_p"] = ITERATION[half.polar_iteration]
    S["power_p_rule"] = _p_rule(half.polar_iteration == "gram")
    S["power_p_short"] = _p_rule(half.polar_iteration == "gram", short=True)
    for p in ("1/4", "1/8", "1/16", "3/10"):
        S[f"power_products_{p.replace('/', '_')}"] = plan(p).matmuls
    S["power_max_denominator"] = routing.MAX_NEWTON_DENOMINATOR
    S["power_eigh_min_floor"] = _sci(routing.EIGH_MIN_FLOOR)
    for r in (2, 3, 4, 8, 16):
        S[f"matpow_{r}"] = matpow_count(r)
    quarter, one = plan("-1/4"), plan("-1")
    S["power_ridge_steps_f32"] = f"{quarter.root_steps} to {one.root_steps}"
    S["power_ridge_steps_f32_q"] = quarter.root_steps
    S["power_ridge_steps_f32_1"] = one.root_steps
    ridge64 = [plan(p, dtype=np.float64) for p in ("-1/4", "-1/2", "-3/4", "-1")]
    S["power_ridge_steps_f64"] = _span([pl.root_steps for pl in ridge64])
    # float64, relative to float64 Polar Express at 256 x 1024
    pe64 = polar_plan(_zeros(REF, np.float64), method="polar_express")
    root64 = [plan(p, dtype=np.float64) for p in positive]
    S["power_f64_products"] = _span([pl.matmuls for pl in root64])
    S["power_f64_polar_steps"] = _span([pl.polar_steps for pl in root64])
    S["power_f64_newton_steps"] = _span([pl.root_steps for pl in root64])
    S["power_f64_vs_polar"] = _span([pl.flops / pe64.flops for pl in root64], "{:.1f}")
    S["power_f64_pe_steps"] = pe64.steps
    S["power_f64_ridge_products"] = ridge64[0].matmuls
    S["power_f64_ridge_steps"] = ridge64[0].root_steps
    S["power_f64_ridge_vs_polar"] = f"{ridge64[0].flops / pe64.flops:.1f}"
    # bfloat16 (default floor 1e-2)
    bf = _bf16_power(REF, "1/2")
    S["power_bf16_floor"] = f"${_tex10(routing.POWER_FLOOR['bfloat16'])}$"
    S["power_bf16_half"] = bf.polar_steps
    S["power_bf16_half_newton"] = bf.root_steps
    S["power_bf16_half_products"] = bf.matmuls
    S["power_bf16_half_f32"] = bf.matmuls - bf.polar.matmuls
    # the same call with the polar factor in float32 (to float32's tol, floor 1e-2)
    f32 = plan("1/2", floor=routing.POWER_FLOOR["bfloat16"])
    S["power_bf16_before_f32"] = f32.matmuls
    # the floor=1e-4 remedy of the known limits, at 128 x 512
    for p in ("1/4", "1/2"):
        k = p.replace("/", "_")
        S[f"power_floor4_products_{k}"] = plan(p, (128, 512), floor=1e-4).matmuls
        S[f"power_products_{k}_128x512"] = plan(p, (128, 512)).matmuls

    # DynMuon's schedule over 10 000 steps
    schedule = dynmuon_schedule(10_000)
    ps = [schedule(t) for t in range(10_001)]
    S["dynmuon_distinct"] = len(set(ps))
    S["dynmuon_zero_at"] = f"{ps.index(Fraction(0)):,}".replace(",", " ")
    S["dynmuon_min_from"] = f"{ps.index(min(ps)):,}".replace(",", " ")


def _tradeoff_numbers(S):
    """polar.md's trade-off table: Polar Express's products and guaranteed error as
    functions of tol, and the bands measured on two inputs, beside Muon's quintic."""
    from spectral_ops import polar, spectral_report
    from spectral_ops.coefficients import minimax_odd, mixed_schedule
    from spectral_ops.testing import make_matrix

    inputs = {"gaussian": make_matrix("gaussian", REF, seed=0, dtype=np.float32),
              "ill": make_matrix("ill", (512, 512), cond=1e4, seed=0, dtype=np.float32)}

    def band(**kw):
        out = []
        for b in inputs.values():
            lo, hi = spectral_report(polar(b, **kw), b, floor=1e-3).band
            out.append(f"[{lo:.4f}, {hi:.4f}]")
        return out

    rows = ["| design | products (256 x 1024) | guaranteed error | products (512 x 512) "
            "| band, Gaussian 256 x 1024 | band, cond 1e4 512 x 512 |",
            "| --- | ---: | ---: | ---: | --- | --- |"]
    for floor in (1e-3, 1e-2):
        for tol in (1e-4, 1e-3, 1e-2, 0.1, 0.2, 0.3):
            kw = dict(method="polar_express", tol=tol, floor=floor)
            a, b = (polar_plan(_zeros(sh), **kw) for sh in (REF, (512, 512)))
            rows.append(f"| floor {floor:g}, tol {tol:g} | {a.matmuls} | {a.error_bound:.2g} "
                        f"| {b.matmuls} | " + " | ".join(band(**kw)) + " |")
    j = polar_plan(_zeros(REF), method="jordan")
    rows.append(f"| Muon's quintic, {j.steps} steps | {j.matmuls} | none | {j.matmuls} | "
                + " | ".join(band(method="jordan")) + " |")
    S["polar_tradeoff_table"] = "\n".join(rows)
    lower = routing.design_lower(1e-3, REF[0], float(np.finfo(np.float32).eps))
    S["mixed_products_1e4"] = sum(
        3 if len(c) == 3 else 4 for c in mixed_schedule(lower, 1e-4)[0])
    S["quintic_products_1e4"] = polar_plan(_zeros(REF), method="polar_express").matmuls
    S["nonic_min_tol"] = f"${_tex10(routing.NONIC_MIN_TOL)}$"
    coefs = [c for tol in (1e-3, 1e-2, 0.1, 0.3) for c in mixed_schedule(lower, tol)[0]
             if len(c) == 5]
    S["nonic_max_coef"] = f"{max(abs(x) for c in coefs for x in c):.0f}"
    S["nonic_slope"] = f"{minimax_odd(1e-3, 1.0, 9)[0]:.1f}"

    def products(tol):
        return sum(3 if len(c) == 3 else 4 for c in mixed_schedule(lower, tol)[0])

    lo, hi = 0.25, 0.9  # the best guarantee of 14 products: bisection on tol
    for _ in range(30):
        lo, hi = (lo, (lo + hi) / 2) if products((lo + hi) / 2) <= 14 else ((lo + hi) / 2, hi)
    S["best_14_products_error"] = f"{hi:.2f}"
    from spectral_ops.coefficients import cushion
    S["nonic_cushion"] = f"{cushion(9):.4f}"


def _substitutions():
    _check_bf16_plans()
    S = {}
    _polar_numbers(S)
    _tradeoff_numbers(S)
    _clip_numbers(S)
    _power_numbers(S)
    return {k: str(v) for k, v in S.items()}


myst_substitutions = _substitutions()
