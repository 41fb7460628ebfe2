"""JPEG compression as libjpeg(-turbo) does it, batched: encode + decode in one compiled pass.

The recipe saves each image with Pillow (``quality=q``: libjpeg's baseline tables scaled by
``jpeg_set_quality``, 4:2:0 chroma, accurate integer DCT) and decodes it again (accurate
integer IDCT, "fancy" triangle upsampling of the chroma). Entropy coding is lossless, so the
decoded pixels depend only on these integer steps, which we reproduce with libjpeg's own
fixed-point constants (jccolor, jcsample, jfdctint, jcdctmgr, jidctint, jdsample, jdcolor).
``tests/test_corruptions.py`` checks the result byte for byte against Pillow.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numba
import numpy as np

from .base import RandomStream, register

# Annex K tables, in natural (row-major) order.
_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])  # fmt: skip
_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99])  # fmt: skip


@lru_cache(maxsize=16)
def quant_tables(quality: int) -> np.ndarray:
    """libjpeg's jpeg_set_quality(quality, force_baseline=TRUE): (2, 8, 8) int64."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    t = (np.stack([_LUMA, _CHROMA]) * scale + 50) // 100
    return np.clip(t, 1, 255).reshape(2, 8, 8).astype(np.int64)


_jit = numba.njit(cache=True, nogil=True)

# jfdctint / jidctint constants (CONST_BITS = 13)
F0298, F0390, F0541, F0765, F0899, F1175 = 2446, 3196, 4433, 6270, 7373, 9633
F1501, F1847, F1961, F2053, F2562, F3072 = 12299, 15137, 16069, 16819, 20995, 25172


@_jit
def _descale(x, n):
    return (x + (1 << (n - 1))) >> n


@_jit
def _fdct_1d(d, out, pass1):
    """jfdctint.c, one 8-point row (pass1) or column (not pass1) of the slow-but-accurate DCT."""
    tmp0, tmp7 = d[0] + d[7], d[0] - d[7]
    tmp1, tmp6 = d[1] + d[6], d[1] - d[6]
    tmp2, tmp5 = d[2] + d[5], d[2] - d[5]
    tmp3, tmp4 = d[3] + d[4], d[3] - d[4]
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    sh = 11 if pass1 else 15  # CONST_BITS -/+ PASS1_BITS
    if pass1:
        out[0] = (tmp10 + tmp11) << 2
        out[4] = (tmp10 - tmp11) << 2
    else:
        out[0] = _descale(tmp10 + tmp11, 2)
        out[4] = _descale(tmp10 - tmp11, 2)
    z1 = (tmp12 + tmp13) * F0541
    out[2] = _descale(z1 + tmp13 * F0765, sh)
    out[6] = _descale(z1 - tmp12 * F1847, sh)
    z1, z2, z3, z4 = tmp4 + tmp7, tmp5 + tmp6, tmp4 + tmp6, tmp5 + tmp7
    z5 = (z3 + z4) * F1175
    tmp4, tmp5, tmp6, tmp7 = tmp4 * F0298, tmp5 * F2053, tmp6 * F3072, tmp7 * F1501
    z1, z2, z3, z4 = -z1 * F0899, -z2 * F2562, -z3 * F1961 + z5, -z4 * F0390 + z5
    out[7] = _descale(tmp4 + z1 + z3, sh)
    out[5] = _descale(tmp5 + z2 + z4, sh)
    out[3] = _descale(tmp6 + z2 + z3, sh)
    out[1] = _descale(tmp7 + z1 + z4, sh)


@_jit
def _idct_1d(d, out, shift):
    """jidctint.c, one 8-point column (shift 11) or row (shift 18) of the accurate IDCT."""
    z2, z3 = d[2], d[6]
    z1 = (z2 + z3) * F0541
    tmp2 = z1 - z3 * F1847
    tmp3 = z1 + z2 * F0765
    tmp0 = (d[0] + d[4]) << 13
    tmp1 = (d[0] - d[4]) << 13
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    tmp0, tmp1, tmp2, tmp3 = d[7], d[5], d[3], d[1]
    z1, z2, z3, z4 = tmp0 + tmp3, tmp1 + tmp2, tmp0 + tmp2, tmp1 + tmp3
    z5 = (z3 + z4) * F1175
    tmp0, tmp1, tmp2, tmp3 = tmp0 * F0298, tmp1 * F2053, tmp2 * F3072, tmp3 * F1501
    z1, z2, z3, z4 = -z1 * F0899, -z2 * F2562, -z3 * F1961 + z5, -z4 * F0390 + z5
    tmp0 += z1 + z3
    tmp1 += z2 + z4
    tmp2 += z2 + z3
    tmp3 += z1 + z4
    out[0] = _descale(tmp10 + tmp3, shift)
    out[7] = _descale(tmp10 - tmp3, shift)
    out[1] = _descale(tmp11 + tmp2, shift)
    out[6] = _descale(tmp11 - tmp2, shift)
    out[2] = _descale(tmp12 + tmp1, shift)
    out[5] = _descale(tmp12 - tmp1, shift)
    out[3] = _descale(tmp13 + tmp0, shift)
    out[4] = _descale(tmp13 - tmp0, shift)


@_jit
def _block_roundtrip(plane, r0, c0, q, blk, row, res):
    """Level shift, DCT, quantise, dequantise, IDCT one 8x8 block of ``plane`` in place."""
    for i in range(8):
        for j in range(8):
            row[j] = plane[r0 + i, c0 + j] - 128
        _fdct_1d(row, res, True)
        for j in range(8):
            blk[i, j] = res[j]
    for j in range(8):
        for i in range(8):
            row[i] = blk[i, j]
        _fdct_1d(row, res, False)
        for i in range(8):  # quantise (round half away from zero, divisor q << 3), dequantise
            d = q[i, j] << 3
            a = abs(res[i]) + (d >> 1)
            k = np.int64(a * (1.0 / d) + 1e-9)  # exact floor(a / d): a / d is k or >= 1/d away
            blk[i, j] = (k if res[i] >= 0 else -k) * q[i, j]
    for j in range(8):
        for i in range(8):
            row[i] = blk[i, j]
        _idct_1d(row, res, 11)
        for i in range(8):
            blk[i, j] = res[i]
    for i in range(8):
        for j in range(8):
            row[j] = blk[i, j]
        _idct_1d(row, res, 18)
        for j in range(8):
            plane[r0 + i, c0 + j] = min(max(res[j] + 128, 0), 255)


@_jit
def jpeg_roundtrip(x: np.ndarray, qt: np.ndarray) -> np.ndarray:
    """Encode and decode each RGB image of (N, H, W, 3) with 4:2:0 chroma; H, W multiples of 16."""
    n, h, w, _ = x.shape
    out = np.empty_like(x)
    y = np.empty((h, w), dtype=np.int64)
    cb = np.empty((h // 2, w // 2), dtype=np.int64)
    cr = np.empty((h // 2, w // 2), dtype=np.int64)
    cbf = np.empty((h, w), dtype=np.int64)
    crf = np.empty((h, w), dtype=np.int64)
    blk = np.empty((8, 8), dtype=np.int64)
    row = np.empty(8, dtype=np.int64)
    res = np.empty(8, dtype=np.int64)
    one_half = 1 << 15
    offset = 128 << 16
    for m in range(n):
        for i in range(h):  # jccolor: RGB -> YCbCr, 16-bit fixed point
            for j in range(w):
                r, g, b = np.int64(x[m, i, j, 0]), np.int64(x[m, i, j, 1]), np.int64(x[m, i, j, 2])
                y[i, j] = (19595 * r + 38470 * g + 7471 * b + one_half) >> 16
                cbf[i, j] = (-11059 * r - 21709 * g + 32768 * b + offset + one_half - 1) >> 16
                crf[i, j] = (32768 * r - 27439 * g - 5329 * b + offset + one_half - 1) >> 16
        for i in range(h // 2):  # jcsample h2v2: 2x2 mean, bias 1, 2, 1, 2, ...
            for j in range(w // 2):
                bias = 1 if j % 2 == 0 else 2
                cb[i, j] = (cbf[2 * i, 2 * j] + cbf[2 * i, 2 * j + 1] + cbf[2 * i + 1, 2 * j] + cbf[2 * i + 1, 2 * j + 1] + bias) >> 2
                cr[i, j] = (crf[2 * i, 2 * j] + crf[2 * i, 2 * j + 1] + crf[2 * i + 1, 2 * j] + crf[2 * i + 1, 2 * j + 1] + bias) >> 2
        for r0 in range(0, h, 8):
            for c0 in range(0, w, 8):
                _block_roundtrip(y, r0, c0, qt[0], blk, row, res)
        for r0 in range(0, h // 2, 8):
            for c0 in range(0, w // 2, 8):
                _block_roundtrip(cb, r0, c0, qt[1], blk, row, res)
                _block_roundtrip(cr, r0, c0, qt[1], blk, row, res)
        _fancy_upsample(cb, cbf)
        _fancy_upsample(cr, crf)
        for i in range(h):  # jdcolor: YCbCr -> RGB
            for j in range(w):
                yy, u, v = y[i, j], cbf[i, j] - 128, crf[i, j] - 128
                rr = yy + ((91881 * v + one_half) >> 16)
                gg = yy + ((-22554 * u + one_half - 46802 * v) >> 16)
                bb = yy + ((116130 * u + one_half) >> 16)
                out[m, i, j, 0] = min(max(rr, 0), 255)
                out[m, i, j, 1] = min(max(gg, 0), 255)
                out[m, i, j, 2] = min(max(bb, 0), 255)
    return out


@_jit
def _fancy_upsample(src, dst):
    """jdsample h2v2_fancy_upsample: triangle filter, 3/4 nearer + 1/4 farther sample."""
    hh, ww = src.shape
    for i in range(hh):
        for v in range(2):
            nb = max(i - 1, 0) if v == 0 else min(i + 1, hh - 1)  # context row, edges replicated
            orow = 2 * i + v
            for j in range(ww):
                this = src[i, j] * 3 + src[nb, j]
                if ww == 1:
                    dst[orow, 0] = (this * 4 + 8) >> 4
                    dst[orow, 1] = (this * 4 + 7) >> 4
                    continue
                last = src[i, j - 1] * 3 + src[nb, j - 1] if j > 0 else this
                nxt = src[i, j + 1] * 3 + src[nb, j + 1] if j < ww - 1 else this
                dst[orow, 2 * j] = (this * 4 + 8) >> 4 if j == 0 else (this * 3 + last + 8) >> 4
                dst[orow, 2 * j + 1] = (this * 4 + 7) >> 4 if j == ww - 1 else (this * 3 + nxt + 7) >> 4


@register("jpeg_compression", "digital", colour=True)
def jpeg_compression(x: np.ndarray, quality: int, rs: RandomStream) -> np.ndarray:
    """Pillow's save(quality=q) + open, as one compiled libjpeg-exact pass (OpenCV's libjpeg for
    image sizes that are not multiples of 16)."""
    n, h, w, _ = x.shape
    if h % 16 == 0 and w % 16 == 0:
        return jpeg_roundtrip(x, quant_tables(quality))
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]
    out = np.empty_like(x)
    for i in range(n):
        ok, buf = cv2.imencode(".jpg", x[i, :, :, ::-1], params)
        out[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    return out
