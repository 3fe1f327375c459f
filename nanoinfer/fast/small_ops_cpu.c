/* The small per-token ops of a decoder layer on the CPU, each one pass over its rows.

   In eager torch, RMSNorm with its residual add is seven kernels (add, cast, square, mean, rsqrt, two
   multiplies), rotary ten, SiLU-and-multiply two, and each reads and writes the whole tensor. At decode
   sizes (a few dozen rows) the cost is the dispatch and the passes, not the arithmetic: here each op is
   one loop that reads its inputs once. On a GPU torch.compile fuses the same ops (model_runner.py).
   The Python wrappers (small_ops_cpu.py) check shapes and fall back to torch for anything else. */

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* Below this many elements a loop stays on one thread: waking the others would cost more. */
#define PARALLEL_MIN_ELEMENTS 16384

/* h = x (+ residual, written to sum_out); out = weight * h / sqrt(mean(h^2) + eps); out, residual and
   sum_out are contiguous [rows, hidden]. x's rows come in groups of group_rows adjacent rows, groups
   group_stride floats apart: Qwen3 normalises each head of q and k, views into the fused qkv output
   (group_rows = heads); a contiguous x is one group of all rows. */
void rms_norm(const float *x, long group_rows, long group_stride, const float *residual, const float *weight,
              float *out, float *sum_out, long rows, int hidden, float eps)
{
    #pragma omp parallel for if (rows * hidden >= PARALLEL_MIN_ELEMENTS)
    for (long r = 0; r < rows; r++) {
        const float *restrict xr = x + (r / group_rows) * group_stride + (r % group_rows) * hidden;
        const float *h = xr;
        if (residual != NULL) {
            const float *restrict rr = residual + r * hidden;
            float *restrict s = sum_out + r * hidden;
            #pragma omp simd
            for (int i = 0; i < hidden; i++) s[i] = xr[i] + rr[i];
            h = s;
        }
        /* in double: no overflow for any float row, and no approximate float reciprocal square root
           (which -ffast-math allows) where the row is extreme */
        double squares = 0.0;
        #pragma omp simd reduction(+ : squares)
        for (int i = 0; i < hidden; i++) squares += (double)h[i] * h[i];
        const float inv_rms = (float)(1.0 / sqrt(squares / hidden + eps));
        float *restrict o = out + r * hidden;
        #pragma omp simd
        for (int i = 0; i < hidden; i++) o[i] = weight[i] * (h[i] * inv_rms);
    }
}

/* Rotary embedding, "rotate half" layout: dimension i pairs with i + head_dim/2 and each pair (a, b)
   becomes (a cos - b sin, b cos + a sin). x: [tokens, heads, head_dim] whose token rows are x_stride
   floats apart (a view into the fused qkv output); cos, sin: [tokens, head_dim/2] rows cs_stride apart;
   out: contiguous [tokens, heads, head_dim]. */
void rotary(const float *x, long x_stride, const float *cos, const float *sin, long cs_stride, float *out,
            long tokens, int heads, int head_dim)
{
    const int half = head_dim / 2;
    #pragma omp parallel for if (tokens * heads * head_dim >= PARALLEL_MIN_ELEMENTS)
    for (long t = 0; t < tokens; t++) {
        const float *restrict c = cos + t * cs_stride;
        const float *restrict s = sin + t * cs_stride;
        for (int h = 0; h < heads; h++) {
            const float *restrict a = x + t * x_stride + (long)h * head_dim;
            const float *restrict b = a + half;
            float *restrict oa = out + (t * heads + h) * head_dim;
            float *restrict ob = oa + half;
            #pragma omp simd
            for (int i = 0; i < half; i++) {
                oa[i] = a[i] * c[i] - b[i] * s[i];
                ob[i] = b[i] * c[i] + a[i] * s[i];
            }
        }
    }
}

/* SwiGLU's activation: x is [rows, 2n], gate then up; out [rows, n] = silu(gate) * up. */
void silu_and_mul(const float *x, float *out, long rows, int n)
{
    #pragma omp parallel for if (rows * n >= PARALLEL_MIN_ELEMENTS)
    for (long r = 0; r < rows; r++) {
        const float *restrict gate = x + r * 2 * n;
        const float *restrict up = gate + n;
        float *restrict o = out + r * n;
        #pragma omp simd
        /* exp's argument capped at 80: past ~88.7 expf overflows, and -ffast-math's approximate
           reciprocal of infinity is NaN; e^80 keeps the quotient a normal float, as good as zero */
        for (int i = 0; i < n; i++) o[i] = gate[i] / (1.0f + expf(fminf(-gate[i], 80.0f))) * up[i];
    }
}
