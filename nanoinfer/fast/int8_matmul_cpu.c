/* y = (x @ q.T) * scale (+ bias) with int8 weights on the CPU: the weight crosses memory as one byte per
   element and is converted to float32 a block at a time, in cache; no dequantized copy is kept.

   A decode step multiplies a few rows of x by every weight: the time is reading the weights, four times
   fewer bytes than float32's. Each thread takes blocks of NB weight rows; each block is converted in chunks
   of KC columns into a small float buffer (in L1), which every row of x then multiplies (vectorised dot
   products, float32 sums). The Python wrapper (int8_matmul_cpu.py) sends more rows (prefill) elsewhere. */

#include <stddef.h>
#include <stdint.h>

#define NB 4     /* weight rows per block (the dot products below are written out for four) */
#define KC 512   /* columns converted at a time: NB * KC floats = 8 KB */
#define PARALLEL_MIN_ELEMENTS 65536

/* x: [M, K] float32, rows x_stride floats apart; q: [N, K] int8, contiguous; scale: [N]; bias: [N] or NULL;
   y: [M, N] contiguous. */
void int8_linear(const float *x, long x_stride, const int8_t *q, const float *scale, const float *bias, float *y,
                 long M, long N, long K)
{
    #pragma omp parallel for schedule(static) if (N * K >= PARALLEL_MIN_ELEMENTS)
    for (long n0 = 0; n0 < N; n0 += NB) {
        const int nb = N - n0 < NB ? (int)(N - n0) : NB;
        float w[NB][KC];
        float acc[M][NB];
        for (long m = 0; m < M; m++)
            for (int j = 0; j < NB; j++) acc[m][j] = 0.0f;
        for (long k0 = 0; k0 < K; k0 += KC) {
            const int kc = K - k0 < KC ? (int)(K - k0) : KC;
            for (int j = 0; j < NB; j++) {  /* (rows past N: zeros) */
                const int8_t *restrict row = q + (n0 + (j < nb ? j : 0)) * K + k0;
                const float keep = j < nb ? 1.0f : 0.0f;
                #pragma omp simd
                for (int k = 0; k < kc; k++) w[j][k] = keep * (float)row[k];
            }
            for (long m = 0; m < M; m++) {  /* four dot products at once: each x element loaded once */
                const float *restrict xm = x + m * x_stride + k0;
                float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
                #pragma omp simd reduction(+ : s0, s1, s2, s3)
                for (int k = 0; k < kc; k++) {
                    const float xk = xm[k];
                    s0 += xk * w[0][k];
                    s1 += xk * w[1][k];
                    s2 += xk * w[2][k];
                    s3 += xk * w[3][k];
                }
                acc[m][0] += s0;
                acc[m][1] += s1;
                acc[m][2] += s2;
                acc[m][3] += s3;
            }
        }
        for (long m = 0; m < M; m++)
            for (int j = 0; j < nb; j++)
                y[m * N + n0 + j] = acc[m][j] * scale[n0 + j] + (bias != NULL ? bias[n0 + j] : 0.0f);
    }
}
