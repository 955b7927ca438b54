"""Backends for the tests: one test body runs on every installed array library.

Each backend turns a float64 NumPy array into an array of its library in a
named dtype. Backends that are not installed, or need a GPU that is absent,
are skipped with the reason.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

if importlib.util.find_spec("hypothesis") is not None:
    import os

    from hypothesis import HealthCheck, settings

    # "ci": bounded, for the README's test command; "long": HYPOTHESIS_PROFILE=long
    settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("long", max_examples=750, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_HAS = {name: importlib.util.find_spec(name) is not None
        for name in ("torch", "jax", "cupy", "array_api_strict")}

if _HAS["jax"]:
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 tests need it
    jax.config.update("jax_default_matmul_precision", "highest")

if _HAS["torch"]:
    import torch

    # TF32 would silently lower float32 matmul precision on GPUs
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def _cuda_available() -> bool:
    return _HAS["torch"] and torch.cuda.is_available()


def _cupy_gpu() -> bool:
    if not _HAS["cupy"]:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@dataclass
class Backend:
    name: str
    dtypes: tuple[str, ...]
    convert: Callable  # (ndarray float64, dtype name) -> array
    skip: str | None = None

    def __call__(self, a, dtype="float64"):
        return self.convert(np.asarray(a), dtype)

    def __repr__(self):
        return self.name


def _numpy(a, dt):
    return a.astype(dt)


def _strict(a, dt):
    import array_api_strict as xs

    return xs.asarray(a.astype(dt))


def _torch(a, dt):
    return torch.from_numpy(np.array(a, dtype=np.float64)).to(getattr(torch, dt))


def _torch_cuda(a, dt):
    return _torch(a, dt).to("cuda")


def _jax(a, dt):
    import jax.numpy as jnp

    return jnp.asarray(a, dtype=getattr(jnp, dt))


def _cupy(a, dt):
    import cupy

    return cupy.asarray(a.astype(dt))


BACKENDS = [
    Backend("numpy", ("float32", "float64"), _numpy),
    Backend("array_api_strict", ("float32", "float64"), _strict,
            None if _HAS["array_api_strict"] else "array-api-strict is not installed"),
    Backend("torch", ("float32", "float64", "bfloat16"), _torch,
            None if _HAS["torch"] else "torch is not installed"),
    Backend("jax", ("float32", "float64", "bfloat16"), _jax,
            None if _HAS["jax"] else "jax is not installed"),
    Backend("torch_cuda", ("float32", "float64", "bfloat16"), _torch_cuda,
            None if _cuda_available() else "no CUDA GPU visible to torch on this machine"),
    Backend("cupy", ("float32", "float64"), _cupy,
            None if _cupy_gpu() else "CuPy with a CUDA GPU is not available on this machine"),
]


def backend_params(dtypes=None):
    """pytest params over (backend, dtype) pairs, skipped with a reason where unavailable."""
    out = []
    for b in BACKENDS:
        for dt in b.dtypes:
            if dtypes is not None and dt not in dtypes:
                continue
            marks = [pytest.mark.skip(reason=b.skip)] if b.skip else []
            out.append(pytest.param(b, dt, id=f"{b.name}-{dt}", marks=marks))
    return out


def backend_only(dtype="float64"):
    return [pytest.param(b, id=b.name, marks=[pytest.mark.skip(reason=b.skip)] if b.skip else [])
            for b in BACKENDS if dtype in b.dtypes]


class CountingArray(np.ndarray):
    """A NumPy array that counts every matrix product it takes part in (for the plans' counts).

    It intercepts the ``matmul`` ufunc, so products are counted whichever side
    the array is on, and results of other ufuncs and array functions
    (concatenation, QR, solves) stay counting arrays.
    """

    products = 0

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if ufunc is np.matmul:
            type(self).products += 1
        plain = [x.view(np.ndarray) if isinstance(x, CountingArray) else x for x in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, CountingArray) else o
                                  for o in kwargs["out"])
        return _counting(getattr(ufunc, method)(*plain, **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        # concatenate, linalg.qr, solve, ...: results stay counting arrays
        return _counting(super().__array_function__(func, types, args, kwargs))


def _counting(result):
    if isinstance(result, np.ndarray):
        return result.view(CountingArray)
    if isinstance(result, tuple):
        items = [_counting(r) for r in result]
        return type(result)(*items) if hasattr(result, "_fields") else tuple(items)
    return result


def count_products(fn, B):
    """How many matrix products ``fn(B)`` makes (NumPy ``B``)."""
    CountingArray.products = 0
    fn(B.view(CountingArray))
    return CountingArray.products


def eigh_refuses(method, dtype, call) -> bool:
    """``"eigh"`` serves float32 and 16-bit inputs: with a float64 input ``call()``
    must raise, naming the fix. True where that was the case checked (the caller's
    test then has nothing more to check)."""
    if method != "eigh" or dtype != "float64":
        return False
    with pytest.raises(ValueError, match=r"method='eigh'.*float64.*method='svd'"):
        call()
    return True
