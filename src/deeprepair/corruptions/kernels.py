"""Compiled per-pixel loops (numba) for corruptions whose per-image references are already
cheap (Pillow's pixelate, a NumPy contrast or noise): one pass over the pixels instead of a
dozen NumPy temporaries. They release the GIL, so chunks run in parallel threads.
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True, fastmath=False)


@_jit
def table_sample(x: np.ndarray, bits: np.ndarray, table: np.ndarray) -> np.ndarray:
    """out[i] = table[x[i] * 65536 + bits[i]]: inverse-CDF sampling of per-value noise."""
    out = np.empty(x.size, dtype=np.uint8)
    xf = x.ravel()
    bf = bits.ravel()
    for i in range(xf.size):
        out[i] = table[(np.int64(xf[i]) << 16) | np.int64(bf[i])]
    return out.reshape(x.shape)


@_jit
def impulse(x: np.ndarray, bits: np.ndarray, threshold: int) -> np.ndarray:
    """Replace a value by 255 or 0 (top bit of bits[.., 1]) when bits[.., 0] < threshold."""
    out = x.copy()
    xf = out.ravel()
    b = bits.reshape(xf.size, 2)
    for i in range(xf.size):
        if b[i, 0] < threshold:
            xf[i] = 255 if b[i, 1] < 32768 else 0
    return out


@_jit
def contrast(x: np.ndarray, c: float) -> np.ndarray:
    """The recipe's uint8(clip((x/255 - m) c + m, 0, 1) 255), m the per-image channel mean.

    Evaluated once per possible value (a 256-entry table per image and channel), then looked up.
    """
    n, h, w, ch = x.shape
    out = np.empty_like(x)
    lut = np.empty(256, dtype=np.uint8)
    for k in range(n):
        for j in range(ch):
            s = 0.0
            for i in range(h):
                for q in range(w):
                    s += x[k, i, q, j] / 255.0
            m = s / (h * w)
            for v in range(256):
                lut[v] = np.uint8(min(max((v / 255.0 - m) * c + m, 0.0), 1.0) * 255.0)
            for i in range(h):
                for q in range(w):
                    out[k, i, q, j] = lut[x[k, i, q, j]]
    return out


@_jit
def add_offsets(x: np.ndarray, bits: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """out = clip(x + offsets[bits], 0, 255): noise whose stored effect does not depend on x."""
    out = np.empty(x.size, dtype=np.uint8)
    xf = x.ravel()
    bf = bits.ravel()
    for i in range(xf.size):
        out[i] = min(max(np.int32(xf[i]) + offsets[bf[i]], 0), 255)
    return out.reshape(x.shape)


@_jit
def filter2d(x: np.ndarray, k: np.ndarray, rix: np.ndarray, cix: np.ndarray) -> np.ndarray:
    """out[m, i, j] = sum_ab k[a, b] x[m, rix[i + a], cix[j + b]] per channel (float32 out).

    rix / cix map padded coordinates to source rows / columns: they encode the border mode.
    Each image is padded once into a small tile; the taps then run over contiguous rows.
    """
    n, h, w, c = x.shape
    kh, kw = k.shape
    hp, wp = h + kh - 1, w + kw - 1
    out = np.zeros((n, h, w * c), dtype=np.float32)
    tile = np.empty((hp, wp * c), dtype=np.float32)
    for m in range(n):
        for i in range(hp):
            for j in range(wp):
                for ch in range(c):
                    tile[i, j * c + ch] = x[m, rix[i], cix[j], ch]
        for i in range(h):
            acc = out[m, i]
            for a in range(kh):
                src = tile[i + a]
                for b in range(kw):
                    wt = k[a, b]
                    if wt != 0:
                        off = b * c
                        for q in range(w * c):
                            acc[q] += wt * src[off + q]
    return out.reshape(n, h, w, c)


@_jit
def sep_filter(x: np.ndarray, kv: np.ndarray, kh: np.ndarray, rix: np.ndarray, cix: np.ndarray) -> np.ndarray:
    """Separable filter: rows with kh (columns mapped by cix), then columns with kv (rix)."""
    n, h, w, c = x.shape
    out = np.zeros((n, h, w, c), dtype=np.float32)
    tmp = np.empty((h, w, c), dtype=np.float32)
    for m in range(n):
        for i in range(h):
            for j in range(w):
                for ch in range(c):
                    acc = np.float32(0)
                    for b in range(kh.size):
                        acc += kh[b] * x[m, i, cix[j + b], ch]
                    tmp[i, j, ch] = acc
        for i in range(h):
            for a in range(kv.size):
                r = rix[i + a]
                wt = kv[a]
                for j in range(w):
                    for ch in range(c):
                        out[m, i, j, ch] += wt * tmp[r, j, ch]
    return out


@_jit
def to_uint8(x: np.ndarray) -> np.ndarray:
    """uint8(clip(x, 0, 1) * 255 + 1e-3): the recipe's truncation, one pass."""
    out = np.empty(x.size, dtype=np.uint8)
    xf = x.ravel()
    for i in range(xf.size):
        out[i] = np.uint8(min(max(xf[i], 0.0), 1.0) * 255.0 + 1e-3)
    return out.reshape(x.shape)


@_jit
def shifted_sum(x: np.ndarray, dy: np.ndarray, dx: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """out[m, i, j] = sum_t wt[t] x[m, clamp(i + dy[m, t]), clamp(j + dx[m, t])] (edges replicated).

    Each image is padded once (edge values) so that every tap reads a contiguous row.
    """
    n, h, w, c = x.shape
    taps = wt.size
    p = 0
    for m in range(n):
        for t in range(taps):
            p = max(p, abs(dy[m, t]), abs(dx[m, t]))
    hp, wp = h + 2 * p, w + 2 * p
    tile = np.empty((hp, wp * c), dtype=np.float32)
    out = np.zeros((n, h, w * c), dtype=np.float32)
    for m in range(n):
        for i in range(hp):
            si = min(max(i - p, 0), h - 1)
            for j in range(wp):
                sj = min(max(j - p, 0), w - 1)
                for ch in range(c):
                    tile[i, j * c + ch] = x[m, si, sj, ch]
        for t in range(taps):
            a = np.float32(wt[t])
            off = (p + dx[m, t]) * c
            for i in range(h):
                src = tile[i + p + dy[m, t]]
                acc = out[m, i]
                for q in range(w * c):
                    acc[q] += a * src[off + q]
    return out.reshape(n, h, w, c)


@_jit
def brightness(x: np.ndarray, c: float) -> np.ndarray:
    """HSV value + c; with hue and saturation fixed RGB scales with V (black becomes grey)."""
    n, h, w, ch = x.shape
    out = np.empty_like(x)
    for m in range(n):
        for i in range(h):
            for j in range(w):
                v = max(x[m, i, j, 0], x[m, i, j, 1], x[m, i, j, 2]) / 255.0
                v_new = min(v + c, 1.0)
                for k in range(3):
                    y = x[m, i, j, k] / 255.0 * (v_new / v) if v > 0 else v_new
                    out[m, i, j, k] = np.uint8(min(max(y, 0.0), 1.0) * 255.0)
    return out


@_jit
def snow_blend(x: np.ndarray, layer: np.ndarray, blend: float) -> np.ndarray:
    """The recipe's snow compositing, one pass: x' = b x + (1 - b) max(x, 1.5 grey(x) + .5),
    plus the snow layer and its 180-degree rotation, clipped, stored like uint8(v * 255)."""
    n, h, w, c = x.shape
    out = np.empty_like(x)
    for m in range(n):
        for i in range(h):
            for j in range(w):
                r, g, b = x[m, i, j, 0] / 255.0, x[m, i, j, 1] / 255.0, x[m, i, j, 2] / 255.0
                lift = (r * 0.299 + g * 0.587 + b * 0.114) * 1.5 + 0.5
                flakes = layer[m, i, j] + layer[m, h - 1 - i, w - 1 - j]
                for ch in range(3):
                    v = x[m, i, j, ch] / 255.0
                    y = blend * v + (1.0 - blend) * max(v, lift) + flakes
                    out[m, i, j, ch] = np.uint8(min(max(y, 0.0), 1.0) * 255.0 + 1e-3)
    return out


@_jit
def box_pixelate(x: np.ndarray, ra, rb, ca, cb, ur, uc) -> np.ndarray:
    """Pillow's 2-tap BOX down (rows ra/rb, columns ca/cb, each pass rounded, horizontal
    first) then nearest BOX up (rows ur, columns uc): downscale once, then copy."""
    n, h, w, c = x.shape
    sh, sw = ra.size, ca.size
    ka = np.empty(sw * c, dtype=np.int64)
    kb = np.empty(sw * c, dtype=np.int64)
    ku = np.empty(w * c, dtype=np.int64)
    for q in range(sw * c):
        ka[q] = ca[q // c] * c + q % c
        kb[q] = cb[q // c] * c + q % c
    for q in range(w * c):
        ku[q] = uc[q // c] * c + q % c
    xr = x.reshape(n, h, w * c)
    t = np.empty((h, sw * c), dtype=np.int32)
    d = np.empty(sw * c, dtype=np.int32)
    out = np.empty((n, h, w * c), dtype=np.uint8)
    for m in range(n):
        for i in range(h):
            row = xr[m, i]
            for q in range(sw * c):
                t[i, q] = (np.int32(row[ka[q]]) + row[kb[q]] + 1) >> 1
        done = -1
        for i in range(h):
            r = ur[i]
            if r == done:
                out[m, i] = out[m, i - 1]
                continue
            for q in range(sw * c):
                d[q] = (t[ra[r], q] + t[rb[r], q] + 1) >> 1
            for q in range(w * c):
                out[m, i, q] = d[ku[q]]
            done = r
    return out.reshape(n, h, w, c)


@_jit
def fog_blend(x: np.ndarray, haze: np.ndarray, strength: float) -> np.ndarray:
    """The recipe's fog: (x + s haze) * max(x) / (max(x) + s), max over the image, one pass."""
    n, h, w, c = x.shape
    out = np.empty_like(x)
    for m in range(n):
        peak = 0
        for i in range(h):
            for j in range(w):
                for ch in range(c):
                    peak = max(peak, x[m, i, j, ch])
        mv = peak / 255.0
        scale = mv / (mv + strength)
        for i in range(h):
            for j in range(w):
                add = strength * haze[m, i, j]
                for ch in range(c):
                    y = (x[m, i, j, ch] / 255.0 + add) * scale
                    out[m, i, j, ch] = np.uint8(min(max(y, 0.0), 1.0) * 255.0 + 1e-3)
    return out


@_jit
def plasma_fractal(r: np.ndarray, size: int, decay: float) -> np.ndarray:
    """Diamond-square height maps (N, size, size) in [0, 1], one per image, wrapping borders.

    ``r`` (N, 3 * sum_levels g^2) holds U(-1, 1) draws: per level (g = size / step cells a side)
    the square centres, then the two diamond sets, each g x g in row-major order.
    """
    n = r.shape[0]
    maps = np.zeros((n, size, size), dtype=np.float64)
    for m in range(n):
        mp = maps[m]
        step, wib, off = size, 100.0, 0
        while step >= 2:
            g, half = size // step, step // 2
            w2 = wib * wib
            for a in range(g):
                for b in range(g):
                    a1, b1 = (a + 1) % g, (b + 1) % g
                    sq = mp[a * step, b * step] + mp[a1 * step, b * step] + mp[a * step, b1 * step] + mp[a1 * step, b1 * step]
                    mp[a * step + half, b * step + half] = sq / 4 + w2 * r[m, off + a * g + b]
            for a in range(g):
                for b in range(g):
                    a0, b0 = (a - 1) % g, (b - 1) % g
                    a1, b1 = (a + 1) % g, (b + 1) % g
                    dr = mp[a * step + half, b * step + half]
                    ul = mp[a * step, b * step]
                    lt = dr + mp[a0 * step + half, b * step + half] + ul + mp[a * step, b1 * step]
                    td = dr + mp[a * step + half, b0 * step + half] + ul + mp[a1 * step, b * step]
                    mp[a * step, b * step + half] = lt / 4 + w2 * r[m, off + g * g + a * g + b]
                    mp[a * step + half, b * step] = td / 4 + w2 * r[m, off + 2 * g * g + a * g + b]
            off += 3 * g * g
            step, wib = half, wib / decay
        lo, hi = mp.min(), 0.0
        for i in range(size):
            for j in range(size):
                mp[i, j] -= lo
                hi = max(hi, mp[i, j])
        for i in range(size):
            for j in range(size):
                mp[i, j] /= hi
    return maps


@_jit
def glass_shuffle(y: np.ndarray, offs: np.ndarray, d: int) -> None:
    """glass blur's shuffle for max delta ``d`` > 1, in place: for h, w from H - d down to d + 1,
    ``y[h, w] <- y[h + dy, w + dx]`` (current values, as the recipe's sequential raster);
    ``offs[m, 0]`` holds dx, ``offs[m, 1]`` dy, indexed by (h - d - 1, w - d - 1)."""
    n, h, w, c = y.shape
    for m in range(n):
        for i in range(h - d, d, -1):
            for j in range(w - d, d, -1):
                si = i + offs[m, 1, i - d - 1, j - d - 1]
                sj = j + offs[m, 0, i - d - 1, j - d - 1]
                for ch in range(c):
                    y[m, i, j, ch] = y[m, si, sj, ch]
