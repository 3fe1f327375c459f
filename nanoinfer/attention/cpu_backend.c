/* Decode attention over the paged KV cache, on the CPU: one new query token per sequence.

   The torch path (attention_torch.py) first copies each sequence's blocks into one padded tensor and
   then runs SDPA over the copy: every key and value crosses memory three times. Here each task, one
   (sequence, KV head) pair, reads that head's keys and values once, in place, block by block through
   the block table, and serves all the query heads that share the KV head (grouped-query attention).

   Per task, three passes over a short row of scores (context length x query heads of the group):
     1. scores = q . k * scale, and each head's maximum
     2. p = exp(score - max), and each head's sum
     3. out = sum over tokens of (p / sum) * v
   Also here: store_kv, this step's keys and values copied into their slots in one call.
   Built at first use by attention_cpu.py with the system C compiler; tested against the torch path. */

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Ask for one KV head's rows of two blocks ahead of use: the next block's keys (into L1) and this
   block's values (into L2, for pass 3). Blocks lie anywhere in the cache, so the hardware prefetcher
   cannot guess the next one; this took the micro-benchmark from ~530 to ~490 us per layer. */
static inline void prefetch_head(const float *next_keys, const float *values, int block_size, int head_dim,
                                 long token_stride)
{
    for (int i = 0; i < block_size; i++)
        for (int d = 0; d < head_dim; d += 16) {  /* one 64-byte line per 16 floats */
            if (next_keys != NULL) __builtin_prefetch(next_keys + i * token_stride + d, 0, 3);
            __builtin_prefetch(values + i * token_stride + d, 0, 2);
        }
}

/* One task: sequence s, KV head kvh. ``head_dim`` is a compile-time constant in the common cases
   (64, 128), so that the compiler keeps a head's accumulator in vector registers. */
static inline __attribute__((always_inline)) void attend_one(
    const float *q, const float *k_cache, const float *v_cache, const int32_t *block_tables,
    const int32_t *seq_lens, float *out, int s, int kvh, int num_heads, int group, const int head_dim,
    int block_size, int max_blocks, long token_stride, long block_stride, float scale, float *scores)
{
    const int len = seq_lens[s];
    const int32_t *table = block_tables + (long)s * max_blocks;
    const long first_head = (long)s * num_heads + (long)kvh * group;
    const float *qs = q + first_head * head_dim;     /* the group's queries, head after head */
    float *os = out + first_head * head_dim;
    float maxes[group], sums[group];
    for (int j = 0; j < group; j++) maxes[j] = -FLT_MAX, sums[j] = 0.0f;

    /* 1. scores and maxima, head by head: the group's later heads find the keys in cache */
    for (int j = 0; j < group; j++) {
        const float *restrict qj = qs + (long)j * head_dim;
        float *restrict row = scores + (long)j * len;
        float m = -FLT_MAX;
        for (int b = 0, t = 0; t < len; b++) {
            const float *restrict k = k_cache + table[b] * block_stride + (long)kvh * head_dim;
            if (j == 0)
                prefetch_head(t + block_size < len ? k_cache + table[b + 1] * block_stride + (long)kvh * head_dim : NULL,
                              v_cache + table[b] * block_stride + (long)kvh * head_dim, block_size, head_dim, token_stride);
            for (int i = 0; i < block_size && t < len; i++, t++, k += token_stride) {
                float dot = 0.0f;
                #pragma omp simd reduction(+ : dot)
                for (int d = 0; d < head_dim; d++) dot += qj[d] * k[d];
                row[t] = dot * scale;
                m = row[t] > m ? row[t] : m;
            }
        }
        maxes[j] = m;
    }
    /* 2. exponentials and their sums */
    for (int j = 0; j < group; j++) {
        float *restrict row = scores + (long)j * len;
        const float m = maxes[j];
        float sum = 0.0f;
        #pragma omp simd reduction(+ : sum)
        for (int t = 0; t < len; t++) {
            row[t] = expf(row[t] - m);
            sum += row[t];
        }
        sums[j] = sum;
    }
    /* 3. weighted sum of values, head by head, accumulated in a local row */
    for (int j = 0; j < group; j++) {
        const float *restrict row = scores + (long)j * len;
        float acc[head_dim];
        for (int d = 0; d < head_dim; d++) acc[d] = 0.0f;
        for (int b = 0, t = 0; t < len; b++) {
            const float *restrict v = v_cache + table[b] * block_stride + (long)kvh * head_dim;
            for (int i = 0; i < block_size && t < len; i++, t++, v += token_stride) {
                const float p = row[t];
                #pragma omp simd
                for (int d = 0; d < head_dim; d++) acc[d] += p * v[d];
            }
        }
        float *restrict oj = os + (long)j * head_dim;
        for (int d = 0; d < head_dim; d++) oj[d] = acc[d] / sums[j];
    }
}

void paged_decode_attention(
    const float *q,              /* [num_seqs, num_heads, head_dim] */
    const float *k_cache,        /* [num_blocks, block_size, num_kv_heads, head_dim] */
    const float *v_cache,        /* same layout as k_cache */
    const int32_t *block_tables, /* [num_seqs, max_blocks] */
    const int32_t *seq_lens,     /* [num_seqs]: tokens in the cache, this step's included */
    float *out,                  /* [num_seqs, num_heads, head_dim] */
    int num_seqs, int num_heads, int num_kv_heads, int head_dim, int block_size, int max_blocks,
    float scale)
{
    const int group = num_heads / num_kv_heads;          /* query heads per KV head */
    const long token_stride = (long)num_kv_heads * head_dim;
    const long block_stride = token_stride * block_size;

    /* A chunk is one sequence's KV heads: its blocks come from memory once, into one core's cache. */
    #pragma omp parallel for collapse(2) schedule(dynamic, num_kv_heads)
    for (int s = 0; s < num_seqs; s++) {
        for (int kvh = 0; kvh < num_kv_heads; kvh++) {
            float *scores = seq_lens[s] > 0 ? malloc(sizeof(float) * group * seq_lens[s]) : NULL;
            if (scores == NULL) {  /* nothing to attend to (or no memory): a zero output, never garbage */
                float *os = out + ((long)s * num_heads + (long)kvh * group) * head_dim;
                for (long i = 0; i < (long)group * head_dim; i++) os[i] = 0.0f;
                continue;
            }
#define ATTEND(HD) attend_one(q, k_cache, v_cache, block_tables, seq_lens, out, s, kvh, num_heads, group, HD, \
                              block_size, max_blocks, token_stride, block_stride, scale, scores)
            if (head_dim == 64) ATTEND(64);
            else if (head_dim == 128) ATTEND(128);
            else ATTEND(head_dim);
#undef ATTEND
            free(scores);
        }
    }
}

/* Write this step's keys and values into their cache slots (a slot is a block's row: block * block_size
   + offset). k, v: [tokens, kv_heads * head_dim], token rows k_stride / v_stride floats apart (views into
   the qkv output). Checks every slot before writing any; returns the first token whose slot is outside
   [0, num_slots), or -1 when all were written. Slots are distinct (each token owns its row); were one
   repeated, which of its writes lands would be unspecified. */
long store_kv(const float *k, long k_stride, const float *v, long v_stride, float *k_cache, float *v_cache,
              const int64_t *slots, long tokens, long row, long num_slots)
{
    for (long t = 0; t < tokens; t++)
        if (slots[t] < 0 || slots[t] >= num_slots) return t;
    #pragma omp parallel for if (tokens >= 256)
    for (long t = 0; t < tokens; t++) {
        memcpy(k_cache + slots[t] * row, k + t * k_stride, sizeof(float) * row);
        memcpy(v_cache + slots[t] * row, v + t * v_stride, sizeof(float) * row);
    }
    return -1;
}
