"""Fits the polynomials of ops::normal_cdf (cutlass_ext/include/cutlass_ext/epilogue_ops.cuh) and checks the
kernel's GELU formula, emulated in float32, against float64 and against torch's own float32 GELU.

    gelu(v) = v Phi(v),  q = Phi(-|v|) = 2^(R(min(|v|, T)) - v^2 / (2 ln 2)),  Phi(v) = 1/2 + sign(v) (1/2 - q)
    R(t) = log2(erfcx(t / sqrt 2) / 2)

R is fitted by weighted least squares with Lawson's reweighting (close to minimax). The float32 form weighs R's
error by q, since what a float32 GELU needs is q to a small absolute error: v Phi(v) for v > 0 sees 1 - q, for
v < 0 sees q times v. The bfloat16 form, of lower degree, weighs it by sqrt(q), which spends the fit's accuracy
more evenly between the two sides; it is judged by its values rounded to bfloat16.
A developer tool (numpy, scipy, torch), not run by the tests: `python tools/fit_gelu.py`.
"""
import numpy as np
import torch
from scipy.special import erfc, erfcx

T = 5.6
FORMS = {"kFloat32": (8, 1.0), "kBFloat16": (5, 0.5)}  # Precision: (degree, power of q in the weight)
MINUS_HALF_LOG2E = -1.0 / (2.0 * np.log(2.0))
f32 = np.float32


def fit(degree, weight_power, top=T, rounds=60):
    t = np.sort(np.cos(np.pi * (np.arange(4000) + 0.5) / 4000) * top / 2 + top / 2)  # Chebyshev nodes on [0, T]
    r = np.log2(0.5 * erfcx(t / np.sqrt(2.0)))
    weight = (0.5 * erfc(t / np.sqrt(2.0))) ** weight_power
    w = np.ones_like(t)
    for _ in range(rounds):
        a = np.vander(t, degree + 1, increasing=True) * (weight * w)[:, None]
        coef = np.linalg.lstsq(a, r * weight * w, rcond=None)[0]
        err = np.abs(np.polyval(coef[::-1], t) - r) * weight
        w = w * np.sqrt(err / err.max()) + 1e-12
        w /= w.max()
    return coef.astype(f32)


def fma(a, b, c):  # float32 a * b + c with one rounding (the float64 product of two float32 values is exact)
    return (np.float64(a) * b.astype(np.float64) + c.astype(np.float64)).astype(f32)


def gelu_kernel(v, coef):
    """The kernel's arithmetic in float32 (2^a correctly rounded here; the hardware's is within ~2 ulp)."""
    t = np.minimum(np.abs(v), f32(T))
    r = np.full_like(t, coef[-1])
    for c in coef[-2::-1]:
        r = fma(r, t, np.full_like(t, c))
    q = np.exp2(fma(f32(MINUS_HALF_LOG2E), v * v, r).astype(np.float64)).astype(f32)
    return v * (f32(0.5) + np.copysign(f32(0.5) - q, v))


def bf16(x):
    return torch.from_numpy(np.asarray(x, dtype=f32)).bfloat16().double().numpy()


def main():
    rng = np.random.default_rng(0)
    v = np.concatenate([np.linspace(-12, 12, 2_000_001).astype(f32), (rng.standard_normal(2_000_000) * 3).astype(f32),
                        (rng.standard_normal(200_000) * 1e-3).astype(f32)])
    exact = v.astype(np.float64) * 0.5 * erfc(-v.astype(np.float64) / np.sqrt(2.0))
    theirs = torch.nn.functional.gelu(torch.from_numpy(v)).numpy()
    for name, (degree, weight_power) in FORMS.items():
        coef = fit(degree, weight_power)
        ours = gelu_kernel(v, coef)
        print(f"{name}: R of degree {degree} on [0, {T}], weight q^{weight_power}")
        print("  coefficients:", ", ".join(f"{c:.9g}f" for c in coef))
        print("  max relative error vs float64 by range of v: ours / torch's float32 GELU")
        for lo, hi in [(-6, -5), (-5, -4), (-4, -3), (-3, -2), (-2, -1), (-1, 1), (1, 12)]:
            m = (v >= lo) & (v < hi) & (exact != 0)
            rel = [np.max(np.abs(y[m] - exact[m]) / np.abs(exact[m])) for y in (ours.astype(np.float64), theirs)]
            print(f"    [{lo}, {hi}): {rel[0]:.2g} / {rel[1]:.2g}")
        m = (v >= -3) & (exact != 0)  # under -3 both round the same float32 difference 1/2 - q
        ulp = np.exp2(np.floor(np.log2(np.abs(exact[m]))) - 7)
        for label, y in (("ours", ours), ("torch's", theirs)):
            err = np.abs(bf16(y[m]) - exact[m]) / ulp
            wrong = np.mean(bf16(y[m]) != bf16(exact[m]))
            print(f"  rounded to bfloat16, v >= -3, {label}: max {err.max():.3f} ulp, {wrong:.2%} not correctly rounded")


if __name__ == "__main__":
    main()
