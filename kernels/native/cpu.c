/* Native CPU kernels: dense projections at decode batch sizes, the grouped MoE expert FFN and its routing,
 * paged decode and prefill attention, RMSNorm, rotary embedding and greedy argmax, float32, AVX2 + FMA (and VNNI's
 * integer dots where the CPU has them: build.py picks the flags).
 *
 * Why not torch: at decode batch sizes every expert sees a handful of tokens, and MKL's small-M GEMMs
 * reach a third of this CPU's FMA peak (measured: a vocabulary-sized lm_head at 1 to 8 rows runs half as
 * fast through torch as here); decode attention through torch copies every sequence's KV
 * blocks into one padded tensor before SDPA reads them again. These kernels read each weight and each
 * cached key/value once, straight from where they live.
 *
 * Batch invariance: every output element is computed by the same sequence of operations whatever
 * else is in the batch (the tile a row lands in, its neighbours and the thread that runs it do not
 * change its arithmetic), so a request gets bit-identical results alone or batched.
 *
 * Threads come from OpenMP; the library links the libgomp that torch already loaded, so the kernels
 * share torch's thread pool and follow torch.set_num_threads.
 *
 * Legend: M rows, N output features, T tokens, D hidden, E experts, K top-k, I expert width, B sequences, H query heads,
 * G key/value heads, R = H / G query heads per key/value head, d head dim, bs block size, S key slots.
 */

#include <immintrin.h>
#include <omp.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int swarm_cpu_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")
#if defined(__AVX512VNNI__)
           && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")
#elif defined(__AVXVNNI__)
           && __builtin_cpu_supports("avxvnni")
#endif
        ;
}

/* ---- vector helpers ----------------------------------------------------------------------------- */

/* e^x: x = n ln2 + r with |r| <= ln2 / 2, e^r by its degree-7 Taylor series (relative error < 1e-8
 * before rounding), 2^n built in the exponent bits. Inputs are clamped to the float range. */
static inline __m256 exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);  /* ln2 split: exact high part */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline float exp1(float x)
{
    float v[8];
    _mm256_storeu_ps(v, exp8(_mm256_set1_ps(x)));
    return v[0];
}

/* [sum(a0), sum(a1), sum(a2), sum(a3)] */
static inline __m128 hsum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3)
{
    __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

static inline float hmax1(__m256 a)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

static inline float hsum1(__m256 a)
{
    float v[4];
    _mm_storeu_ps(v, hsum4(a, a, a, a));
    return v[0];
}

/* ---- C = A W^T over a tile of 4 weight rows ------------------------------------------------------- */

/* Rows a0 (and a1) of A against weight rows w .. w + 3 ldw: c0[j] = a0 . w_j (c1[j] = a1 . w_j).
 * The one-row form runs exactly the two-row form's arithmetic for its row. Unless pf is NULL, cache lines
 * pf_lo .. pf_hi - 1 of the four rows at pf (the next tile; line i covers floats 16i .. 16i + 15 of each
 * row) are prefetched meanwhile, spread evenly over the loop: the weights stream from DRAM once, and a
 * single core's hardware prefetcher alone leaves the loop waiting on them. */
static void tile4(const float *a0, const float *a1, const float *w, int64_t ldw, int64_t K, float *c0, float *c1,
                  const float *pf, int64_t pf_lo, int64_t pf_hi)
{
    /* error accumulator (no division in the loop): a line is due each time it passes the step count */
    const int64_t steps = K / 8 ? K / 8 : 1, share = pf_hi - pf_lo;
    int64_t next = pf_lo, due = 0;
    __m256 s00 = _mm256_setzero_ps(), s01 = s00, s02 = s00, s03 = s00;
    __m256 s10 = s00, s11 = s00, s12 = s00, s13 = s00;
    const float *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;
    int64_t k = 0;
    if (a1) {
        for (; k + 8 <= K; k += 8) {
            if (pf)
                for (due += share; due >= steps; due -= steps, next++)
                    for (int j = 0; j < 4; j++)
                        _mm_prefetch((const char *)(pf + j * ldw + 16 * next), _MM_HINT_T1);
            __m256 x0 = _mm256_loadu_ps(a0 + k), x1 = _mm256_loadu_ps(a1 + k);
            __m256 v0 = _mm256_loadu_ps(w + k), v1 = _mm256_loadu_ps(w1 + k);
            __m256 v2 = _mm256_loadu_ps(w2 + k), v3 = _mm256_loadu_ps(w3 + k);
            /* keep the weights in registers: folded into the FMAs they would be loaded once per row */
            __asm__("" : "+x"(v0), "+x"(v1), "+x"(v2), "+x"(v3));
            s00 = _mm256_fmadd_ps(x0, v0, s00); s01 = _mm256_fmadd_ps(x0, v1, s01);
            s02 = _mm256_fmadd_ps(x0, v2, s02); s03 = _mm256_fmadd_ps(x0, v3, s03);
            s10 = _mm256_fmadd_ps(x1, v0, s10); s11 = _mm256_fmadd_ps(x1, v1, s11);
            s12 = _mm256_fmadd_ps(x1, v2, s12); s13 = _mm256_fmadd_ps(x1, v3, s13);
        }
    } else {
        for (; k + 8 <= K; k += 8) {
            if (pf)
                for (due += share; due >= steps; due -= steps, next++)
                    for (int j = 0; j < 4; j++)
                        _mm_prefetch((const char *)(pf + j * ldw + 16 * next), _MM_HINT_T1);
            __m256 x0 = _mm256_loadu_ps(a0 + k);
            s00 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w + k), s00);
            s01 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w1 + k), s01);
            s02 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w2 + k), s02);
            s03 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w3 + k), s03);
        }
    }
    _mm_storeu_ps(c0, hsum4(s00, s01, s02, s03));
    if (a1)
        _mm_storeu_ps(c1, hsum4(s10, s11, s12, s13));
    for (; k < K; k++)
        for (int j = 0; j < 4; j++) {
            c0[j] += a0[k] * w[j * ldw + k];
            if (a1)
                c1[j] += a1[k] * w[j * ldw + k];
        }
}

/* Rows a0, a1, a2 of A against weight rows w .. w + 3 ldw: cr[j] = ar . w_j, each element's arithmetic that of
 * tile4 (one accumulator, FMAs in k order, hsum4, then the scalar tail), so a row gets the same bits in either.
 * Twelve accumulators: 7 loads a step feed 12 FMAs where tile4's two rows load 6 for 8. Prefetches as tile4. */
static void tile4x3(const float *a0, const float *a1, const float *a2, const float *w, int64_t ldw, int64_t K,
                    float *c0, float *c1, float *c2, const float *pf, int64_t pf_lo, int64_t pf_hi)
{
    const int64_t steps = K / 8 ? K / 8 : 1, share = pf_hi - pf_lo;
    int64_t next = pf_lo, due = 0;
    __m256 s00 = _mm256_setzero_ps(), s01 = s00, s02 = s00, s03 = s00, s10 = s00, s11 = s00, s12 = s00, s13 = s00;
    __m256 s20 = s00, s21 = s00, s22 = s00, s23 = s00;
    const float *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        for (due += share; due >= steps; due -= steps, next++)
            for (int j = 0; j < 4; j++)
                _mm_prefetch((const char *)(pf + j * ldw + 16 * next), _MM_HINT_T1);
        __m256 x0 = _mm256_loadu_ps(a0 + k), x1 = _mm256_loadu_ps(a1 + k), x2 = _mm256_loadu_ps(a2 + k), v;
        v = _mm256_loadu_ps(w + k);
        s00 = _mm256_fmadd_ps(x0, v, s00); s10 = _mm256_fmadd_ps(x1, v, s10); s20 = _mm256_fmadd_ps(x2, v, s20);
        v = _mm256_loadu_ps(w1 + k);
        s01 = _mm256_fmadd_ps(x0, v, s01); s11 = _mm256_fmadd_ps(x1, v, s11); s21 = _mm256_fmadd_ps(x2, v, s21);
        v = _mm256_loadu_ps(w2 + k);
        s02 = _mm256_fmadd_ps(x0, v, s02); s12 = _mm256_fmadd_ps(x1, v, s12); s22 = _mm256_fmadd_ps(x2, v, s22);
        v = _mm256_loadu_ps(w3 + k);
        s03 = _mm256_fmadd_ps(x0, v, s03); s13 = _mm256_fmadd_ps(x1, v, s13); s23 = _mm256_fmadd_ps(x2, v, s23);
    }
    _mm_storeu_ps(c0, hsum4(s00, s01, s02, s03));
    _mm_storeu_ps(c1, hsum4(s10, s11, s12, s13));
    _mm_storeu_ps(c2, hsum4(s20, s21, s22, s23));
    for (; k < K; k++)
        for (int j = 0; j < 4; j++) {
            c0[j] += a0[k] * w[j * ldw + k];
            c1[j] += a1[k] * w[j * ldw + k];
            c2[j] += a2[k] * w[j * ldw + k];
        }
}

/* tile4's one-row form (the same arithmetic, so the same bits) for a row whose weight tile streams from memory:
 * the four weight rows one after another rather than side by side, one sequential stream, which a core reads
 * from DRAM faster (a matrix-vector product over rows of 384 floats: 14.4 -> 16.4 GB/s on one core; one
 * sequence's decode with float32 weights, about 15% a step). Its one chain of FMAs would be half the speed on a
 * tile already in L1 / L2. The next tile (pf) is prefetched, each row while the same row of this one is read. */
static void tile4_stream(const float *a0, const float *w, int64_t ldw, int64_t K, float *c0, const float *pf)
{
    const int64_t steps = K / 8 ? K / 8 : 1, lines = (K + 15) / 16;
    __m256 s[4];
    int64_t k = 0;
    for (int j = 0; j < 4; j++) {
        const float *wj = w + j * ldw;
        __m256 acc = _mm256_setzero_ps();
        int64_t next = 0, due = 0;
        for (k = 0; k + 8 <= K; k += 8) {
            for (due += lines; due >= steps; due -= steps, next++)
                _mm_prefetch((const char *)(pf + j * ldw + 16 * next), _MM_HINT_T1);
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + k), _mm256_loadu_ps(wj + k), acc);
        }
        s[j] = acc;
    }
    _mm_storeu_ps(c0, hsum4(s[0], s[1], s[2], s[3]));
    for (; k < K; k++)
        for (int j = 0; j < 4; j++)
            c0[j] += a0[k] * w[j * ldw + k];
}

/* One row of A against one weight row (the last N % 4 columns). */
static float dot(const float *a, const float *w, int64_t K)
{
    __m256 s = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8)
        s = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(w + k), s);
    float out = hsum1(s);
    for (; k < K; k++)
        out += a[k] * w[k];
    return out;
}

/* c[m][j] = A[m] . W[n + j] for m < M and j < width (width <= 4): the M rows of A against weight rows
 * n .. n + width - 1; c is [M][4]. */
static void rows_x_tile(const float *A, int64_t lda, int64_t M, const float *W, int64_t ldw, int64_t n,
                        int width, int64_t K, float (*c)[4])
{
    const float *w = W + n * ldw;
    int64_t m = 0;
    if (width == 4 && M == 1) { /* one sequence's decode: the tile is read once, from memory */
        tile4_stream(A, w, ldw, K, c[0], w + 4 * ldw);
        return;
    }
    if (width == 4) {
        /* the next tile's lines are prefetched a share per pass, so that memory stays busy through every
         * pass over this tile rather than only the first (then streaming and arithmetic overlap) */
        const int64_t passes = (M + 2) / 3, lines = (K + 15) / 16;
        for (int64_t pass = 0; m < M; pass++) {
            const int64_t lo = pass * lines / passes, hi = (pass + 1) * lines / passes;
            if (M - m >= 3) {
                tile4x3(A + m * lda, A + (m + 1) * lda, A + (m + 2) * lda, w, ldw, K, c[m], c[m + 1], c[m + 2],
                        w + 4 * ldw, lo, hi);
                m += 3;
            } else {
                tile4(A + m * lda, m + 1 < M ? A + (m + 1) * lda : NULL, w, ldw, K, c[m], m + 1 < M ? c[m + 1] : NULL,
                      w + 4 * ldw, lo, hi);
                m += 2;
            }
        }
        return;
    }
    for (m = 0; m < M; m++)
        for (int j = 0; j < width; j++)
            c[m][j] = dot(A + m * lda, w + j * ldw, K);
}

/* ---- normalisation and rotary embedding ------------------------------------------------------------ */

/* Rows of x: row (t, r) starts at x + t * st + r * D, for t < T and r < R (a [T, R, D] view whose rows
 * may sit inside a wider tensor, as the heads of a fused qkv projection do). */

/* o = w * x / sqrt(mean(x^2) + eps) over one row of D (o may be x) */
static void rms_row(const float *xr, int64_t D, const float *w, float eps, float *o)
{
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= D; i += 8) {
        __m256 v = _mm256_loadu_ps(xr + i);
        acc = _mm256_fmadd_ps(v, v, acc);
    }
    float ss = hsum1(acc);
    for (; i < D; i++)
        ss += xr[i] * xr[i];
    float inv = 1.0f / sqrtf(ss / (float)D + eps);
    __m256 vi = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= D; i += 8)
        _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(_mm256_loadu_ps(xr + i), vi)));
    for (; i < D; i++)
        o[i] = w[i] * (xr[i] * inv);
}

/* out[t, r] = w * x[t, r] / sqrt(mean(x[t, r]^2) + eps); out is [T, R, D] contiguous. Returns 0. */
int swarm_rms_norm(const float *x, int64_t T, int64_t R, int64_t D, int64_t st, const float *w, float eps,
                   float *out)
{
#pragma omp parallel for if (T * R * D >= 65536)
    for (int64_t row = 0; row < T * R; row++)
        rms_row(x + row / R * st + row % R * D, D, w, eps, out + row * D);
    return 0;
}

/* Rotary embedding in place, halves convention: with h = D / 2, x[i] <- x[i] cos[i] - x[i + h] sin[i] and
 * x[i + h] <- x[i + h] cos[i + h] + x[i] sin[i + h], over one row x of D with its cos/sin rows c, s. */
static void rotary_row(float *xr, int64_t D, const float *c, const float *s)
{
    const int64_t h = D / 2;
    int64_t i = 0;
    for (; i + 8 <= h; i += 8) {
        __m256 a = _mm256_loadu_ps(xr + i), b = _mm256_loadu_ps(xr + h + i);
        _mm256_storeu_ps(xr + i, _mm256_sub_ps(_mm256_mul_ps(a, _mm256_loadu_ps(c + i)),
                                               _mm256_mul_ps(b, _mm256_loadu_ps(s + i))));
        _mm256_storeu_ps(xr + h + i, _mm256_add_ps(_mm256_mul_ps(b, _mm256_loadu_ps(c + h + i)),
                                                   _mm256_mul_ps(a, _mm256_loadu_ps(s + h + i))));
    }
    for (; i < h; i++) {
        float a = xr[i], b = xr[h + i];
        xr[i] = a * c[i] - b * s[i];
        xr[h + i] = b * c[h + i] + a * s[h + i];
    }
}

/* rotary_row over every row (t, r) of x, with cos/sin [T, D]. Returns 0. */
int swarm_rotary(float *x, int64_t T, int64_t R, int64_t D, int64_t st, const float *cos, const float *sin)
{
#pragma omp parallel for if (T * R * D >= 65536)
    for (int64_t row = 0; row < T * R; row++)
        rotary_row(x + row / R * st + row % R * D, D, cos + row / R * D, sin + row / R * D);
    return 0;
}

/* ---- weights in blocks of 32: Q8_0 and Q4_0 ------------------------------------------------------------ */

/* A weight matrix [N, K] as the projections read it: float32 rows, or rows of K / 32 blocks whose 32 weights
 * share one float32 scale s: Q8_0 (int8 values q, w = q s) or Q4_0 (4-bit values q, w = (q - 8) s, two a byte:
 * byte j of a block holds weight j in its low nibble and weight j + 16 in its high one, llama.cpp's order).
 * Products with Q8_0 / Q4_0 weights are integer products against activations rounded to Q8_0 blocks (below,
 * qxtile_fmt); deq_block unpacks a block to the floats q s for a dequantised copy (prefill's GEMM).
 * Half-precision weights (bfloat16, float16) are read as blocks of 32 without a scale: a half widens to
 * float32 exactly (bfloat16: its 16 bits shifted into the top of a float's; float16: F16C's conversion) and
 * enters the same FMAs in the same order as a float32 weight would, so a half projection equals the float32
 * kernel on the widened matrix bit for bit. Int8 weights with one float32 scale per row (w = q s) widen the
 * same way, without their scale: a row's product is s (x . q), with x . q computed exactly as the float32
 * kernel computes it on the widened q, then one multiply. */
#define QBLOCK 32
enum { W_F32 = 0, W_Q8 = 1, W_Q4 = 2, W_BF16 = 3, W_F16 = 4, W_I8 = 5 };
#define W_HALF(fmt) ((fmt) == W_BF16 || (fmt) == W_F16) /* no scales */
#define W_WIDE(fmt) (W_HALF(fmt) || (fmt) == W_I8) /* widened to float32 in registers, float activations */

struct qmat {
    int64_t fmt;
    const void *w; /* float [N, K], int8 [N, K], uint8 [N, K / 2] or 16-bit [N, K] */
    const float *s; /* [N, K / 32] for Q8_0 / Q4_0, [N] for per-row int8; NULL for float32 and halves */
};

static inline int64_t qrow_bytes(int64_t fmt, int64_t K)
{
    return fmt == W_F32 ? K * (int64_t)sizeof(float) : W_HALF(fmt) ? 2 * K : fmt == W_Q4 ? K / 2 : K;
}

/* the matrix from row r on (rows of K) */
static inline struct qmat qmat_at(const struct qmat *m, int64_t r, int64_t K)
{
    const int64_t per_row = m->fmt == W_I8 ? 1 : K / QBLOCK;
    struct qmat o = {m->fmt, (const char *)m->w + r * qrow_bytes(m->fmt, K), m->s ? m->s + r * per_row : NULL};
    return o;
}

/* The 32 weights of the block whose bytes start at q, scale s (unused for halves and per-row int8, which come
 * back as their integers q), as four vectors of 8. A Q4_0 weight (q - 8) s is computed as one FMA, q s + (-8 s):
 * the same real number rounded once (-8 s is exact), so the same float. */
static inline __attribute__((always_inline)) void deq_block(const char *q, float s, __m256 w[4], const int fmt)
{
    if (fmt == W_BF16) {
        for (int z = 0; z < 4; z++)
            w[z] = _mm256_castsi256_ps(
                _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(q + 16 * z))), 16));
        return;
    }
    if (fmt == W_F16) {
        for (int z = 0; z < 4; z++)
            w[z] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(q + 16 * z)));
        return;
    }
    if (fmt == W_I8) {
        for (int z = 0; z < 4; z++)
            w[z] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 8 * z))));
        return;
    }
    const __m256 vs = _mm256_set1_ps(s);
    if (fmt == W_Q8) {
        for (int z = 0; z < 4; z++)
            w[z] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 8 * z)))),
                                 vs);
        return;
    }
    const __m256 off = _mm256_set1_ps(-8.0f * s);
    const __m128i v = _mm_loadu_si128((const __m128i *)q), mask = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(v, mask), hi = _mm_and_si128(_mm_srli_epi16(v, 4), mask); /* weights 0-15, 16-31 */
    w[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), vs, off);
    w[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(lo, lo))), vs, off);
    w[2] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), vs, off);
    w[3] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(hi, hi))), vs, off);
}

/* rows r .. r + n - 1 of a quantised m (rows of K) dequantised into out [n, K] (per-row int8: widened, not yet
 * scaled); the n rows after them are prefetched meanwhile (the next tile: the weights stream from DRAM once) */
static inline __attribute__((always_inline)) void deq_rows_fmt(const struct qmat *m, int64_t r, int64_t n, int64_t K,
                                                               float *out, const int fmt)
{
    const int64_t nbk = K / QBLOCK, rb = qrow_bytes(fmt, K), bb = rb / nbk;
    for (int64_t i = 0; i < n; i++) {
        const char *q = (const char *)m->w + (r + i) * rb;
        const float *s = W_WIDE(fmt) ? NULL : m->s + (r + i) * nbk;
        for (int64_t b = 0; b < nbk; b++) {
            if ((b * bb) % 64 == 0)
                _mm_prefetch(q + n * rb + b * bb, _MM_HINT_T1);
            if (!W_WIDE(fmt) && b % 16 == 0)
                _mm_prefetch((const char *)(s + n * nbk + b), _MM_HINT_T1);
            __m256 w[4];
            deq_block(q + b * bb, W_WIDE(fmt) ? 0.0f : s[b], w, fmt);
            for (int z = 0; z < 4; z++)
                _mm256_storeu_ps(out + i * K + b * QBLOCK + 8 * z, w[z]);
        }
    }
}

static void deq_rows(const struct qmat *m, int64_t r, int64_t n, int64_t K, float *out)
{
    switch (m->fmt) {
    case W_Q8: deq_rows_fmt(m, r, n, K, out, W_Q8); break;
    case W_Q4: deq_rows_fmt(m, r, n, K, out, W_Q4); break;
    case W_BF16: deq_rows_fmt(m, r, n, K, out, W_BF16); break;
    case W_F16: deq_rows_fmt(m, r, n, K, out, W_F16); break;
    default: deq_rows_fmt(m, r, n, K, out, W_I8);
    }
}

/* tile4 on half-precision or per-row int8 weight rows n .. n + 3 of m, widened in registers: c0[j] = a0 . w_j
 * (c1[j] = a1 . w_j unless a1 is NULL), each element's arithmetic exactly tile4's on the widened values (K is a
 * multiple of 32: no scalar tail), times the row's scale for int8. The next tile's bytes are prefetched
 * meanwhile. */
static inline __attribute__((always_inline)) void qtile4_fmt(const float *a0, const float *a1, const struct qmat *m,
                                                             int64_t n, int64_t K, float *c0, float *c1, const int fmt)
{
    const int64_t nbk = K / QBLOCK, rb = qrow_bytes(fmt, K), bb = rb / nbk;
    const char *q = (const char *)m->w + n * rb;
    __m256 acc0[4], acc1[4];
    for (int j = 0; j < 4; j++)
        acc0[j] = acc1[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nbk; b++) {
        if ((b * bb) % 64 == 0)
            for (int j = 0; j < 4; j++)
                _mm_prefetch(q + (4 + j) * rb + b * bb, _MM_HINT_T1);
        const float *x0 = a0 + b * QBLOCK, *x1 = a1 ? a1 + b * QBLOCK : NULL;
        for (int j = 0; j < 4; j++) {
            __m256 w[4];
            deq_block(q + j * rb + b * bb, 0.0f, w, fmt); /* no scale: halves, or int8's after the sum */
            for (int z = 0; z < 4; z++)
                acc0[j] = _mm256_fmadd_ps(_mm256_loadu_ps(x0 + 8 * z), w[z], acc0[j]);
            if (a1)
                for (int z = 0; z < 4; z++)
                    acc1[j] = _mm256_fmadd_ps(_mm256_loadu_ps(x1 + 8 * z), w[z], acc1[j]);
        }
    }
    const __m128 s = fmt == W_I8 ? _mm_loadu_ps(m->s + n) : _mm_set1_ps(1.0f);
    _mm_storeu_ps(c0, _mm_mul_ps(hsum4(acc0[0], acc0[1], acc0[2], acc0[3]), s));
    if (a1)
        _mm_storeu_ps(c1, _mm_mul_ps(hsum4(acc1[0], acc1[1], acc1[2], acc1[3]), s));
}

/* ---- Q8_0 / Q4_0 weights against activations rounded to Q8_0 blocks -------------------------------------
 *
 * As llama.cpp does, a product with Q8_0 or Q4_0 weights first rounds each row of activations to Q8_0 blocks:
 * per 32 values d = max |x| / 127 and q = x (1 / d) rounded to nearest even (q in -127..127). A block pair's
 * product is then the exact int32 dot of its two blocks' integers, scaled once by d_w d_x and accumulated in
 * float32: about twice the speed of unpacking every weight to a float (one scale per block rather than one
 * per weight), for the activations' rounding (about 0.4% of a dot product's size). Each row's arithmetic is
 * the same whatever the rows beside it, so the products stay batch-invariant. Half weights (bf16, f16) keep
 * float activations. */
#define QX(fmt) ((fmt) == W_Q8 || (fmt) == W_Q4) /* weight formats that round their activations */

/* The rows of A a projection reads: float32 rows x (ld apart) and, for Q8_0 / Q4_0 weights, the same rows in
 * Q8_0 blocks: values q (ld apart) and scales d (ld / 32 apart). */
struct xrows {
    const float *x;
    const int8_t *q;
    const float *d;
    int64_t ld;
};

static inline struct xrows xrows_at(const struct xrows *a, int64_t m)
{
    struct xrows o = {a->x + m * a->ld, a->q ? a->q + m * a->ld : NULL, a->d ? a->d + m * (a->ld / QBLOCK) : NULL,
                      a->ld};
    return o;
}

/* x [K] (K a multiple of 32) -> q [K], d [K / 32], as described above */
static void quantize_row_q8(const float *x, int64_t K, int8_t *q, float *d)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7); /* undoes the packs' lane interleave */
    for (int64_t b = 0; b < K / QBLOCK; b++) {
        __m256 v[4], mx = _mm256_setzero_ps();
        for (int z = 0; z < 4; z++) {
            v[z] = _mm256_loadu_ps(x + b * QBLOCK + 8 * z);
            mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[z]));
        }
        const float db = hmax1(mx) / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
        d[b] = db;
        __m256i i32[4];
        for (int z = 0; z < 4; z++) /* the default rounding mode: to nearest even */
            i32[z] = _mm256_cvtps_epi32(_mm256_mul_ps(v[z], _mm256_set1_ps(id)));
        const __m256i i16 = _mm256_packs_epi16(_mm256_packs_epi32(i32[0], i32[1]), _mm256_packs_epi32(i32[2], i32[3]));
        _mm256_storeu_si256((__m256i *)(q + b * QBLOCK), _mm256_permutevar8x32_epi32(i16, order));
    }
}

/* Q4_0 products take their activations in a pair layout: the 64 values of blocks b, b + 1 (b even) as
 * [b's 0-15, (b + 1)'s 0-15, b's 16-31, (b + 1)'s 16-31], matching the nibbles of the two blocks' 32 weight
 * bytes (qxrows_q4); an odd last block keeps its order. q [K] of one row, rearranged in place. */
static void pair_layout(int8_t *q, int64_t K)
{
    for (int64_t b = 0; b + 2 <= K / QBLOCK; b += 2) {
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)(q + b * QBLOCK));
        const __m256i x1 = _mm256_loadu_si256((const __m256i *)(q + (b + 1) * QBLOCK));
        _mm256_storeu_si256((__m256i *)(q + b * QBLOCK), _mm256_permute2x128_si256(x0, x1, 0x20));
        _mm256_storeu_si256((__m256i *)(q + (b + 1) * QBLOCK), _mm256_permute2x128_si256(x0, x1, 0x31));
    }
}

/* rows a (M of them, K wide) rounded into q [M, K] and d [M, K / 32] (q in the pair layout for Q4_0 weights,
 * fmt): the xrows of a for block weights */
static struct xrows quantize_rows(const float *a, int64_t lda, int64_t M, int64_t K, int8_t *q, float *d, int fmt)
{
    for (int64_t m = 0; m < M; m++) {
        quantize_row_q8(a + m * lda, K, q + m * K, d + m * (K / QBLOCK));
        if (fmt == W_Q4)
            pair_layout(q + m * K, K);
    }
    struct xrows o = {a, q, d, K};
    return o;
}

/* Integer dots of 32-byte vectors, as 8 int32 lanes (lane i: bytes 4i .. 4i + 3): acc + u . x for unsigned
 * bytes u and signed x. With VNNI one instruction; without, maddubs then madd, exact for the sizes here
 * (pair sums of a u below 128 against |x| <= 127 stay inside int16), so both give the same integers. */
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define DPBUSD(acc, u, x) _mm256_dpbusd_epi32(acc, u, x)
#elif defined(__AVXVNNI__)
#define DPBUSD(acc, u, x) _mm256_dpbusd_avx_epi32(acc, u, x)
#else
#define DPBUSD(acc, u, x) _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)))
#endif

/* the int32 dot of two Q8_0 blocks w, x (|values| <= 127) as 8 lanes turned float: |w| against x carrying w's
 * sign */
static inline __m256 block_dot(__m256i w, __m256i x)
{
    return _mm256_cvtepi32_ps(DPBUSD(_mm256_setzero_si256(), _mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)));
}

/* Q4_0 weights go two blocks at a time. The 32 bytes of blocks b, b + 1 load as one vector v: v & 15 holds both
 * blocks' weights 0-15 (b's in the low half) and v >> 4 & 15 their weights 16-31, as unsigned q (not q - 8),
 * against activations in the pair layout (pair_layout). Lanes 0-3 of the dot then sum products of block b and
 * lanes 4-7 of block b + 1; `corr` (q4_corr) subtracts 8 times the same lanes' activations, which makes them
 * the products with q - 8, exactly. An odd last block is one pair of halves: lo = its weights 0-15 and 16-31,
 * hi = 0. */
static inline void q4_unpack(const char *q, int two_blocks, __m256i *lo, __m256i *hi)
{
    const __m256i mask = _mm256_set1_epi8(0x0F);
    if (two_blocks) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)q);
        *lo = _mm256_and_si256(v, mask);
        *hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
        return;
    }
    const __m128i v = _mm_loadu_si128((const __m128i *)q);
    *lo = _mm256_and_si256(_mm256_insertf128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1), mask);
    *hi = _mm256_setzero_si256();
}

/* -8 x the activations of each lane of a pair (xl, xh as q4_unpack's lo, hi pair them) */
static inline __m256i q4_corr(__m256i xl, __m256i xh)
{
    const __m256i eight = _mm256_set1_epi8(8);
    const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(eight, xl), _mm256_maddubs_epi16(eight, xh));
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(-1));
}

/* lanes' scales [a x 4, b x 4] for a pair, or [a x 8] for a lone block (two_blocks 0) */
static inline __m256 pair_scales(const float *p, int two_blocks)
{
    if (!two_blocks)
        return _mm256_broadcast_ss(p);
    const __m128 ab = _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)p));
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(ab), _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
}

/* One or two rows (m, m + 1 when two) of A in blocks against weight rows n .. n + width - 1 (bytes q, scales s,
 * rows rb bytes and nbk blocks apart; wbuf: the tile unpacked, when unpacked): c[m][j] = sum over blocks of
 * the int32 block dot * (d_w d_x). Q8_0 goes a block at a time, Q4_0 a pair of blocks (above). With m == 0 the
 * next tile's bytes and scales are prefetched meanwhile. Inlined with fmt, two and unpacked constant, so each
 * case gets its own loop. */
static inline __attribute__((always_inline)) void qxrows(const struct xrows *A, int64_t m, const char *q,
                                                          const float *s, int64_t rb, int64_t nbk, int width,
                                                          const int8_t *wbuf, int64_t K, float (*c)[4],
                                                          const int fmt, const int two, const int unpacked)
{
    const int64_t bb = rb / nbk, step = fmt == W_Q4 ? 2 : 1;
    const int8_t *x0 = A->q + m * A->ld, *x1 = x0 + A->ld;
    const float *d0 = A->d + m * (A->ld / QBLOCK), *d1 = d0 + A->ld / QBLOCK;
    __m256 acc0[4], acc1[4];
    for (int j = 0; j < 4; j++)
        acc0[j] = acc1[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nbk; b += step) {
        if (m == 0 && (b * bb) % 64 == 0)
            for (int j = 0; j < 4; j++)
                _mm_prefetch(q + (4 + j) * rb + b * bb, _MM_HINT_T1);
        if (m == 0 && b % 16 == 0)
            for (int j = 0; j < 4; j++)
                _mm_prefetch((const char *)(s + (4 + j) * nbk + b), _MM_HINT_T1);
        if (fmt == W_Q8) {
            const __m256i xa = _mm256_loadu_si256((const __m256i *)(x0 + b * QBLOCK));
            const __m256i xb = two ? _mm256_loadu_si256((const __m256i *)(x1 + b * QBLOCK)) : xa;
            const __m256 da = _mm256_broadcast_ss(d0 + b), db = two ? _mm256_broadcast_ss(d1 + b) : da;
            for (int j = 0; j < width; j++) {
                const __m256i w = _mm256_loadu_si256((const __m256i *)(q + j * rb + b * bb));
                const __m256 sw = _mm256_broadcast_ss(s + j * nbk + b);
                acc0[j] = _mm256_fmadd_ps(block_dot(w, xa), _mm256_mul_ps(sw, da), acc0[j]);
                if (two)
                    acc1[j] = _mm256_fmadd_ps(block_dot(w, xb), _mm256_mul_ps(sw, db), acc1[j]);
            }
            continue;
        }
        const int pair = b + 1 < nbk;
        const __m256i za = _mm256_setzero_si256();
        const __m256i xal = _mm256_loadu_si256((const __m256i *)(x0 + b * QBLOCK));
        const __m256i xah = pair ? _mm256_loadu_si256((const __m256i *)(x0 + (b + 1) * QBLOCK)) : za;
        const __m256i xbl = two ? _mm256_loadu_si256((const __m256i *)(x1 + b * QBLOCK)) : xal;
        const __m256i xbh = two && pair ? _mm256_loadu_si256((const __m256i *)(x1 + (b + 1) * QBLOCK)) : xah;
        const __m256i ca = q4_corr(xal, xah), cb = two ? q4_corr(xbl, xbh) : ca;
        const __m256 da = pair_scales(d0 + b, pair), db = two ? pair_scales(d1 + b, pair) : da;
        for (int j = 0; j < width; j++) {
            __m256i lo, hi;
            if (unpacked) {
                lo = _mm256_loadu_si256((const __m256i *)(wbuf + j * K + b * QBLOCK));
                hi = pair ? _mm256_loadu_si256((const __m256i *)(wbuf + j * K + (b + 1) * QBLOCK)) : za;
            } else {
                q4_unpack(q + j * rb + b * bb, pair, &lo, &hi);
            }
            const __m256 sw = pair_scales(s + j * nbk + b, pair);
            acc0[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(DPBUSD(DPBUSD(ca, lo, xal), hi, xah)), _mm256_mul_ps(sw, da),
                                      acc0[j]);
            if (two)
                acc1[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(DPBUSD(DPBUSD(cb, lo, xbl), hi, xbh)),
                                          _mm256_mul_ps(sw, db), acc1[j]);
        }
    }
    for (int j = 0; j < width; j++) {
        c[m][j] = hsum1(acc0[j]);
        if (two)
            c[m + 1][j] = hsum1(acc1[j]);
    }
}

/* c[m][j] = A[m] . W[n + j] for m < M, j < width, with W's rows n .. n + width - 1 in Q8_0 or Q4_0 and A's rows
 * in Q8_0 blocks. Rows go by two at a time against the tile; with more than two rows a Q4_0 tile is unpacked
 * once into wbuf [4, K] bytes first (each pair's lo then hi, as q4_unpack gives them). */
static inline __attribute__((always_inline)) void qxtile_fmt(const struct xrows *A, int64_t M, const struct qmat *W,
                                                              int64_t n, int width, int64_t K, float (*c)[4],
                                                              int8_t *wbuf, const int fmt)
{
    const int64_t nbk = K / QBLOCK, rb = qrow_bytes(fmt, K);
    const char *q = (const char *)W->w + n * rb;
    const float *s = W->s + n * nbk;
    if (M <= 2 || fmt == W_Q8) {
        int64_t m = 0;
        for (; m + 2 <= M; m += 2)
            qxrows(A, m, q, s, rb, nbk, width, NULL, K, c, fmt, 1, 0);
        if (m < M)
            qxrows(A, m, q, s, rb, nbk, width, NULL, K, c, fmt, 0, 0);
        return;
    }
    for (int j = 0; j < width; j++)
        for (int64_t b = 0; b < nbk; b += 2) {
            __m256i lo, hi;
            q4_unpack(q + j * rb + b * (rb / nbk), b + 1 < nbk, &lo, &hi);
            _mm256_storeu_si256((__m256i *)(wbuf + j * K + b * QBLOCK), lo);
            if (b + 1 < nbk)
                _mm256_storeu_si256((__m256i *)(wbuf + j * K + (b + 1) * QBLOCK), hi);
        }
    int64_t m = 0;
    for (; m + 2 <= M; m += 2)
        qxrows(A, m, q, s, rb, nbk, width, wbuf, K, c, fmt, 1, 1);
    if (m < M)
        qxrows(A, m, q, s, rb, nbk, width, wbuf, K, c, fmt, 0, 1);
}

/* rows_x_tile over any weight matrix: c[m][j] = A[m] . W[n + j] for m < M, j < width. Float32 weights run
 * rows_x_tile; Q8_0 / Q4_0 ones the integer tiles above (A's rows in blocks); half and per-row int8 ones the
 * same bits as rows_x_tile on the widened weights (times int8's row scale): one or two rows against four weight
 * rows widen in registers, more rows (or a last, narrower tile) widen the tile once into buf [4, K] and run the
 * float tiles over it. */
static void qrows_x_tile(const struct xrows *A, int64_t M, const struct qmat *W, int64_t n, int width, int64_t K,
                         float (*c)[4], float *buf)
{
    switch (W->fmt) {
    case W_F32: rows_x_tile(A->x, A->ld, M, (const float *)W->w, K, n, width, K, c); return;
    case W_Q8: qxtile_fmt(A, M, W, n, width, K, c, (int8_t *)buf, W_Q8); return;
    case W_Q4: qxtile_fmt(A, M, W, n, width, K, c, (int8_t *)buf, W_Q4); return;
    }
    if (width == 4 && M <= 2) {
        const float *a1 = M > 1 ? A->x + A->ld : NULL;
        float *c1 = M > 1 ? c[1] : NULL;
        if (W->fmt == W_BF16)
            qtile4_fmt(A->x, a1, W, n, K, c[0], c1, W_BF16);
        else if (W->fmt == W_F16)
            qtile4_fmt(A->x, a1, W, n, K, c[0], c1, W_F16);
        else
            qtile4_fmt(A->x, a1, W, n, K, c[0], c1, W_I8);
        return;
    }
    deq_rows(W, n, width, K, buf);
    rows_x_tile(A->x, A->ld, M, buf, K, 0, width, K, c);
    if (W->fmt == W_I8)
        for (int64_t m = 0; m < M; m++)
            for (int j = 0; j < width; j++)
                c[m][j] *= W->s[n + j];
}

/* Scratch for qrows_x_tile over rows of K: a dequantised tile for quantised weights, nothing for float32 (a
 * pointer that is not NULL all the same, so NULL always means out of memory). Free with free(). */
static float *qscratch(const struct qmat *W, int64_t K)
{
    return W->fmt == W_F32 ? malloc(1) : aligned_alloc(64, (4 * K * sizeof(float) + 63) / 64 * 64);
}

/* out [N, K] = the dequantised weights of m (each one rounding of q s), threads splitting the rows. Returns 0,
 * -1 for a format or a K the blocks cannot hold. */
int swarm_dequantize(int64_t fmt, const void *w, const float *s, int64_t N, int64_t K, float *out)
{
    if (fmt < W_Q8 || fmt > W_I8 || K % QBLOCK || (!W_HALF(fmt) && !s))
        return -1;
    const struct qmat m = {fmt, w, s};
#pragma omp parallel for if (N * K >= 65536)
    for (int64_t r = 0; r < N; r += 4) {
        const int64_t n = N - r < 4 ? N - r : 4;
        deq_rows(&m, r, n, K, out + r * K);
        if (fmt == W_I8)
            for (int64_t i = 0; i < n; i++)
                for (int64_t k = 0; k < K; k++)
                    out[(r + i) * K + k] *= s[r + i];
    }
    return 0;
}

/* ---- dense projections ------------------------------------------------------------------------------ */

#define ROWS 64 /* rows of x per pass over a weight tile: the tile stays in L1 while they go by */

/* Thread tid of nt's share of out[M, N] = x[M, K] W[N, K]^T (+ bias[N]): a contiguous run of 4-column tiles,
 * so its weight reads are one sequential stream; a row's arithmetic is the same whatever M is. Returns 0, or
 * -2 when its scratch cannot be allocated (nothing written). */
static int linear_part(const float *x, int64_t M, int64_t K, const struct qmat *w, int64_t N, const float *bias,
                       float *out, int tid, int nt)
{
    const int64_t tiles = (N + 3) / 4, t0 = tiles * tid / nt, t1 = tiles * (tid + 1) / nt;
    float c[ROWS][4], *buf = qscratch(w, K), *xd = NULL;
    int8_t *xq = NULL;
    struct xrows a = {x, NULL, NULL, K};
    if (buf && QX(w->fmt) && t0 < t1) { /* this thread's own copy of the rows in blocks (a few us at most) */
        xq = malloc(M * K + 1);
        xd = malloc((M * (K / QBLOCK) + 1) * sizeof *xd);
        if (xq && xd)
            a = quantize_rows(x, K, M, K, xq, xd, (int)w->fmt);
    }
    if (!buf || (QX(w->fmt) && t0 < t1 && !a.q)) {
        free(buf); free(xq); free(xd);
        return -2;
    }
    for (int64_t t = t0; t < t1; t++) {
        int64_t n = t * 4;
        int width = N - n < 4 ? (int)(N - n) : 4;
        for (int64_t m0 = 0; m0 < M; m0 += ROWS) {
            int64_t rows = M - m0 < ROWS ? M - m0 : ROWS;
            const struct xrows am = xrows_at(&a, m0);
            qrows_x_tile(&am, rows, w, n, width, K, c, buf);
            for (int64_t m = 0; m < rows; m++)
                for (int j = 0; j < width; j++)
                    out[(m0 + m) * N + n + j] = bias ? c[m][j] + bias[n + j] : c[m][j];
        }
    }
    free(buf); free(xq); free(xd);
    return 0;
}

/* A weight this small runs on one thread: waking the others would cost more than it saves. */
#define LINEAR_PARALLEL(N, K) ((N) * (K) >= 32768)

/* out[M, N] = x[M, K] W[N, K]^T (+ bias[N]), threads splitting the columns; W float32 (fmt 0, s NULL), Q8_0
 * (1) or Q4_0 (2) with its scales s [N, K / 32], bfloat16 (3) or float16 (4) (s NULL), or int8 (5) with a
 * scale per row s [N]. Returns 0, -1 for a format or a K the blocks cannot hold, -2 when memory runs out. */
int swarm_qlinear(const float *x, int64_t M, int64_t K, int64_t fmt, const void *w, const float *s, int64_t N,
                  const float *bias, float *out)
{
    if (fmt < W_F32 || fmt > W_I8 || (fmt != W_F32 && (K % QBLOCK || (!W_HALF(fmt) && !s))))
        return -1;
    const struct qmat m = {fmt, w, s};
    int failed = 0;
#pragma omp parallel if (LINEAR_PARALLEL(N, K))
    if (linear_part(x, M, K, &m, N, bias, out, omp_get_thread_num(), omp_get_num_threads())) {
#pragma omp atomic write
        failed = 1;
    }
    return failed ? -2 : 0;
}

/* out[M, N] = x[M, K] W[N, K]^T (+ bias[N]) for a float32 W. Returns 0, -2 when memory runs out. */
int swarm_linear(const float *x, int64_t M, int64_t K, const float *w, int64_t N, const float *bias, float *out)
{
    return swarm_qlinear(x, M, K, W_F32, w, NULL, N, bias, out);
}

/* ---- routing and greedy picks ------------------------------------------------------------------------ */

/* Top-k routing of T tokens over E experts: ids[t] are the K largest logits[t] in descending order (the
 * lower index first on a tie), weights[t] their softmax over all E (mode 0; renorm > 0 rescales them to
 * sum to one) or over the K chosen (mode 1). logits [T, E], weights [T, K], ids [T, K]. Returns 0, or -1
 * for K outside 1 .. min(E, 64). */
int swarm_route(const float *logits, int64_t T, int64_t E, int64_t K, int64_t mode, int64_t renorm,
                float *weights, int64_t *ids)
{
    if (K < 1 || K > E || K > 64)
        return -1;
    for (int64_t t = 0; t < T; t++) {
        const float *l = logits + t * E;
        float *w = weights + t * K;
        int64_t *id = ids + t * K;
        for (int64_t k = 0; k < K; k++) { /* selection: K is a handful */
            int64_t best = -1;
            for (int64_t e = 0; e < E; e++) {
                int taken = 0;
                for (int64_t j = 0; j < k && !taken; j++)
                    taken = id[j] == e;
                if (!taken && (best < 0 || l[e] > l[best]))
                    best = e;
            }
            id[k] = best;
        }
        const float top = l[id[0]];
        float all = 0.0f, chosen = 0.0f;
        if (mode == 0)
            for (int64_t e = 0; e < E; e++)
                all += expf(l[e] - top);
        for (int64_t k = 0; k < K; k++)
            chosen += w[k] = expf(l[id[k]] - top);
        const float by = mode == 0 && !renorm ? all : chosen;
        for (int64_t k = 0; k < K; k++)
            w[k] /= by;
    }
    return 0;
}

/* out[r] = the index of the largest x[r, .] (the first of equals; the first NaN if any), rows of V. */
int swarm_argmax(const float *x, int64_t R, int64_t V, int64_t *out)
{
#pragma omp parallel for if (R * V >= 262144)
    for (int64_t r = 0; r < R; r++) {
        const float *row = x + r * V;
        __m256 vmax = _mm256_set1_ps(-INFINITY), nan = _mm256_setzero_ps();
        int64_t i = 0;
        for (; i + 8 <= V; i += 8) {
            __m256 v = _mm256_loadu_ps(row + i);
            vmax = _mm256_max_ps(vmax, v);
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        }
        float best = hmax1(vmax);
        int has_nan = _mm256_movemask_ps(nan) != 0;
        for (; i < V; i++) {
            has_nan |= row[i] != row[i];
            best = row[i] > best ? row[i] : best;
        }
        int64_t at = 0;
        if (has_nan) {
            while (row[at] == row[at])
                at++;
        } else { /* the first entry equal to best: 8 compared at a time, then the rest one by one */
            const __m256 vbest = _mm256_set1_ps(best);
            int hit = 0;
            for (; at + 8 <= V; at += 8)
                if ((hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(row + at), vbest, _CMP_EQ_OQ))))
                    break;
            if (hit)
                at += __builtin_ctz(hit);
            else
                while (row[at] != best && at + 1 < V)
                    at++;
        }
        out[r] = at;
    }
    return 0;
}

/* ---- grouped SwiGLU experts ------------------------------------------------------------------------ */

/* h[i] = silu(g[i]) * u[i] = g[i] / (1 + e^-g[i]) * u[i] for i < n */
static void silu_mul(const float *g, const float *u, float *h, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i);
        __m256 den = _mm256_add_ps(_mm256_set1_ps(1.0f), exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv)));
        _mm256_storeu_ps(h + i, _mm256_mul_ps(_mm256_div_ps(gv, den), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++)
        h[i] = g[i] / (1.0f + exp1(-g[i])) * u[i];
}

/* The routed experts of one call: token-expert pairs grouped by expert, each pair's token row copied next to
 * its group's (xs), the expert width's activations h, and the output. */
struct experts {
    struct qmat gate_up, down; /* [E, 2I, D] (gate rows, then up rows), [E, D, I], of one format */
    int64_t E, I, D, T;
    int64_t *start, *token; /* start[e] .. start[e + 1]: expert e's pairs; token[s]: pair s's token */
    float *pw, *xs, *h, *out; /* pair weights [P], rows [P, D], activations [P, I]; out [T, D] */
    int8_t *xq, *hq; /* Q8_0 / Q4_0 experts: xs and h in Q8_0 blocks, with their scales xd, hd (else NULL) */
    float *xd, *hd;
};

static void experts_free(struct experts *e)
{
    free(e->start); free(e->token); free(e->pw); free(e->xs); free(e->h);
    free(e->xq); free(e->hq); free(e->xd); free(e->hd);
}

/* Groups the T x K pairs of ids/weights [T, K] by expert (stable) and zeroes out. Runs on one thread.
 * Returns 0, -1 for an expert id out of range, -2 when memory runs out (nothing left allocated). */
static int experts_plan(struct experts *e, const float *x, const float *weights, const int64_t *ids, int64_t K)
{
    const int64_t P = e->T * K, D = e->D, n = P ? P : 1;
    for (int64_t p = 0; p < P; p++)
        if (ids[p] < 0 || ids[p] >= e->E)
            return -1;
    int64_t *fill = calloc(e->E, sizeof *fill);
    e->start = calloc(e->E + 1, sizeof *e->start);
    e->token = malloc(n * sizeof *e->token);
    e->pw = malloc(n * sizeof *e->pw);
    e->xs = aligned_alloc(64, (n * D * sizeof(float) + 63) / 64 * 64);
    e->h = aligned_alloc(64, (n * e->I * sizeof(float) + 63) / 64 * 64);
    const int blocks = QX(e->gate_up.fmt);
    if (blocks) {
        e->xq = malloc(n * D);
        e->hq = malloc(n * e->I);
        e->xd = malloc(n * (D / QBLOCK) * sizeof(float));
        e->hd = malloc(n * (e->I / QBLOCK) * sizeof(float));
    }
    if (!fill || !e->start || !e->token || !e->pw || !e->xs || !e->h
        || (blocks && (!e->xq || !e->hq || !e->xd || !e->hd))) {
        free(fill);
        experts_free(e);
        return -2;
    }
    for (int64_t p = 0; p < P; p++)
        e->start[ids[p] + 1]++;
    for (int64_t i = 0; i < e->E; i++)
        e->start[i + 1] += e->start[i];
    for (int64_t p = 0; p < P; p++) {
        int64_t at = e->start[ids[p]] + fill[ids[p]]++;
        e->token[at] = p / K;
        e->pw[at] = weights[p];
        memcpy(e->xs + at * D, x + (p / K) * D, D * sizeof(float));
    }
    free(fill);
    memset(e->out, 0, e->T * D * sizeof(float));
    return 0;
}

/* Thread tid of nt's share of out[t] = sum_k weights[t, k] FFN_{ids[t, k]}(x[t]), FFN_i(x) = down_i (silu(gate_i x)
 * * up_i x); every thread of the team calls it (it holds a barrier). Each thread takes a contiguous share of the
 * columns and walks it expert by expert, so its weight reads are long sequential runs (what the hardware
 * prefetcher follows). Sets *failed (shared) when its scratch cannot be allocated. */
static void experts_run(const struct experts *e, int tid, int nt, int *failed)
{
    const int64_t I = e->I, D = e->D, P = e->start[e->E], jt = (I + 3) / 4, dt = (D + 3) / 4;
    float (*g)[4] = malloc((P ? P : 1) * sizeof *g), (*u)[4] = malloc((P ? P : 1) * sizeof *u);
    float *buf = qscratch(&e->gate_up, D > I ? D : I);
    if (!g || !u || !buf) {
#pragma omp atomic write
        *failed = 1;
    }
    if (e->xq) /* the rows in blocks, the threads taking a share each */
        quantize_rows(e->xs + P * tid / nt * D, D, P * (tid + 1) / nt - P * tid / nt, D, e->xq + P * tid / nt * D,
                      e->xd + P * tid / nt * (D / QBLOCK), (int)e->gate_up.fmt);
#pragma omp barrier
    const struct xrows xs = {e->xs, e->xq, e->xd, D}, hs = {e->h, e->hq, e->hd, I};
    /* h = silu(xs gate^T) * (xs up^T), 4 columns of the expert width at a time */
    for (int64_t x = 0; x < e->E && !*failed; x++) {
        int64_t n = e->start[x + 1] - e->start[x];
        const struct xrows A = xrows_at(&xs, e->start[x]);
        const struct qmat W = qmat_at(&e->gate_up, x * 2 * I, D);
        for (int64_t t = jt * tid / nt; t < jt * (tid + 1) / nt && n; t++) {
            int64_t j = t * 4;
            int width = I - j < 4 ? (int)(I - j) : 4;
            qrows_x_tile(&A, n, &W, j, width, D, g, buf);
            qrows_x_tile(&A, n, &W, I + j, width, D, u, buf);
            silu_mul(&g[0][0], &u[0][0], &g[0][0], 4 * n);
            for (int64_t m = 0; m < n; m++)
                memcpy(e->h + (e->start[x] + m) * I + j, g[m], width * sizeof(float));
        }
    }
#pragma omp barrier
    if (e->hq) {
        quantize_rows(e->h + P * tid / nt * I, I, P * (tid + 1) / nt - P * tid / nt, I, e->hq + P * tid / nt * I,
                      e->hd + P * tid / nt * (I / QBLOCK), (int)e->down.fmt);
#pragma omp barrier
    }
    /* out[token] += weight * (h down^T): a thread owns whole output columns; experts add in order */
    for (int64_t x = 0; x < e->E && !*failed; x++) {
        int64_t n = e->start[x + 1] - e->start[x];
        const struct xrows A = xrows_at(&hs, e->start[x]);
        const struct qmat W = qmat_at(&e->down, x * D, I);
        for (int64_t t = dt * tid / nt; t < dt * (tid + 1) / nt && n; t++) {
            int64_t j = t * 4;
            int width = D - j < 4 ? (int)(D - j) : 4;
            qrows_x_tile(&A, n, &W, j, width, I, g, buf);
            for (int64_t m = 0; m < n; m++) {
                float *o = e->out + e->token[e->start[x] + m] * D + j, w = e->pw[e->start[x] + m];
                for (int c = 0; c < width; c++)
                    o[c] += w * g[m][c];
            }
        }
    }
    free(g);
    free(u);
    free(buf);
}

/* out[t] = sum_k weights[t, k] * FFN_{ids[t, k]}(x[t]). x [T, D], gate_up [E, 2I, D], down [E, D, I] of format
 * fmt (as swarm_qlinear; scales gs [E, 2I, D / 32], ds [E, D, I / 32] for Q8_0 / Q4_0, gs [E, 2I], ds [E, D]
 * for int8, NULL for float32 and halves), weights [T, K], ids
 * [T, K], out [T, D]. Returns 0, or -1 for an expert id out of range (or a format or width the blocks cannot
 * hold), -2 when memory runs out. */
int swarm_expert_ffn(const float *x, int64_t T, int64_t D, int64_t fmt, const void *gate_up, const float *gs,
                     const void *down, const float *ds, int64_t E, int64_t I, const float *weights,
                     const int64_t *ids, int64_t K, float *out)
{
    if (fmt < W_F32 || fmt > W_I8 || (fmt != W_F32 && (D % QBLOCK || I % QBLOCK || (!W_HALF(fmt) && (!gs || !ds)))))
        return -1;
    struct experts e = {{fmt, gate_up, gs}, {fmt, down, ds}, E, I, D, T, NULL, NULL, NULL, NULL, NULL, out, NULL,
                        NULL, NULL, NULL};
    int code = experts_plan(&e, x, weights, ids, K), failed = 0;
    if (code)
        return code;
#pragma omp parallel
    experts_run(&e, omp_get_thread_num(), omp_get_num_threads(), &failed);
    experts_free(&e);
    return failed ? -2 : 0;
}

/* ---- int8 KV storage ---------------------------------------------------------------------------------- */

/* R rows of d floats -> int8 values [R, d] and scales [R], as runtime/block_pool.quantize_int8 computes
 * them (same operations, so the same bits): scale = max |x| / 127 (0 for an all-zero row), values x / scale
 * rounded to nearest even and clamped to [-127, 127]. */
static void store_int8(const float *x, int64_t R, int64_t d, int8_t *values, float *scales)
{
    for (int64_t r = 0; r < R; r++) {
        const float *xr = x + r * d;
        float mx = 0.0f;
        for (int64_t c = 0; c < d; c++)
            mx = fabsf(xr[c]) > mx ? fabsf(xr[c]) : mx;
        const float sc = mx / 127.0f, safe = sc > 0.0f ? sc : 1.0f;
        for (int64_t c = 0; c < d; c++) {
            float v = nearbyintf(xr[c] / safe);
            values[r * d + c] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
        }
        scales[r] = sc;
    }
}

/* Quantise T tokens' rows x [T, G, d] (token t at x + t * st, its G rows contiguous) into their slots of an
 * int8 cache [N bs, G, d] and its scales [N bs, G]. Returns 0. */
int swarm_store_int8(const float *x, int64_t T, int64_t G, int64_t d, int64_t st, const int64_t *slots,
                     int8_t *cache, float *scales)
{
#pragma omp parallel for if (T * G * d >= 65536)
    for (int64_t t = 0; t < T; t++)
        store_int8(x + t * st, G, d, cache + slots[t] * G * d, scales + slots[t] * G);
    return 0;
}

/* ---- paged decode attention ------------------------------------------------------------------------ */

#define CHUNK 64 /* key positions scored per softmax update */
#define MAX_H 64 /* query heads per sequence */
#define AHEAD 64 /* positions prefetched ahead of the one being read */

/* A paged cache as the attention kernels read it: keys and values [N, bs, G, d] of float32, float16, or int8
 * with a float32 scale per slot and head (ks/vs [N, bs, G]; NULL otherwise). A float16 or int8 value is
 * converted to float exactly (F16C's conversion for a half), so a float16 cache computes what float32 holding
 * the same values would; an int8 value's scale is folded in after the arithmetic it would otherwise repeat d
 * times: a key's after its dot product with the query, a value's into its softmax weight. */
enum { KV_F32 = 0, KV_I8 = 1, KV_F16 = 2 };
#define KV_BYTES(fmt) ((fmt) == KV_I8 ? 1 : (fmt) == KV_F16 ? 2 : 4)
struct paged {
    const void *k, *v;
    const float *ks, *vs;
    int64_t bs, G, fmt;
};

/* 8 consecutive cache elements at p (a byte address) as floats */
static inline __m256 load8(const char *p, int fmt)
{
    return fmt == KV_I8    ? _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)))
           : fmt == KV_F16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p))
                           : _mm256_loadu_ps((const float *)p);
}

static inline float load1(const char *p, int fmt)
{
    return fmt == KV_I8 ? (float)*(const int8_t *)p : fmt == KV_F16 ? _cvtsh_ss(*(const uint16_t *)p)
                                                                     : *(const float *)p;
}

/* a . w over d elements of a cache row w (float32: exactly `dot`; the others `dot` on the widened row) */
static inline float dot_kv(const float *a, const char *w, int64_t d, int fmt)
{
    if (fmt == KV_F32)
        return dot(a, (const float *)w, d);
    __m256 s = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= d; k += 8)
        s = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), load8(w + k * KV_BYTES(fmt), fmt), s);
    float out = hsum1(s);
    for (; k < d; k++)
        out += a[k] * load1(w + k * KV_BYTES(fmt), fmt);
    return out;
}

/* x [n] floats into float16 at out, rounded to nearest even (as torch's float -> half) */
static void store_f16(const float *x, int64_t n, uint16_t *out)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        out[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}

/* A cursor over the cache lines of one sequence's blocks, keys and values together: the kernel moves it a
 * few lines at a time as it computes, so that memory stays busy while the arithmetic runs (a whole block
 * at once stalls the core until the loads drain, and the prefetchers alone leave it waiting). An int8
 * cache's scale lines (sbytes a block) go with the first lines of their block. */
struct lines {
    const char *k, *v, *ks, *vs;
    const int64_t *table;
    int64_t nb, bytes, sbytes, blk, off; /* blocks, bytes per block (and of scales); the next line: offset off of block blk */
};

static inline void prefetch_lines(struct lines *c, int64_t n)
{
    for (; n > 0 && c->blk < c->nb; n--) {
        const int64_t at = c->table[c->blk] * c->bytes + c->off;
        _mm_prefetch(c->k + at, _MM_HINT_T0);
        _mm_prefetch(c->v + at, _MM_HINT_T0);
        if (c->off < c->sbytes) {
            const int64_t sat = c->table[c->blk] * c->sbytes + c->off;
            _mm_prefetch(c->ks + sat, _MM_HINT_T0);
            _mm_prefetch(c->vs + sat, _MM_HINT_T0);
        }
        if ((c->off += 64) >= c->bytes) {
            c->off = 0;
            c->blk++;
        }
    }
}

/* Online softmax over one sequence's visible keys for all H query heads (head r reads key/value head
 * r / R). q [H, d]; acc [H, d] is the output. Keys and values are read in place from the paged cache.
 * Inlined into attend_seq once per cache format fmt, so each gets its own loops (float32's are the same
 * instructions as before the others existed). */
static inline __attribute__((always_inline)) void attend_body(const float *q, int64_t H, int64_t R, int64_t d,
                                                              const struct paged *kv, const int64_t *table,
                                                              const uint8_t *mask, int64_t S, float scale,
                                                              float *acc, const int fmt)
{
    const int q8 = fmt == KV_I8;
    float m[MAX_H], l[MAX_H], s[MAX_H][CHUNK], pw[CHUNK];
    const char *kp[CHUNK], *vp[CHUNK];
    const float *ksp[CHUNK], *vsp[CHUNK]; /* int8: the G scales of each gathered slot */
    for (int64_t r = 0; r < H; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    memset(acc, 0, H * d * sizeof *acc);
    int vec = d % 8 == 0;
    const int64_t bs = kv->bs, G = kv->G, esz = KV_BYTES(fmt);
    int64_t blk = 0, o = 0; /* the next position to look at: slot o of block blk of the table */
    const int64_t nb = S / bs, stride = G * d;
    /* The cache is cold (the layer's expert weights went through since it was last read) and a
     * sequence's blocks lie anywhere: lines are prefetched AHEAD positions ahead, and then at the rate
     * the loops below consume them. Every 8 positions scored for one head, and every 8 summed for one
     * head, move the cursor half of 8 positions' lines / H, so it keeps its distance. (Also when the threads
     * split one sequence's key/value heads: with the cache still in L3, the hardware prefetcher alone did as
     * well, but with float32 weights streaming 10 MB a layer through it the cache comes from memory, and the
     * cursor took one sequence's attention from about 160 to 95 us a step.) */
    const int64_t per_pos = (stride * esz + 63) / 64, share = (8 * per_pos + H - 1) / H;
    struct lines pf = {(const char *)kv->k, (const char *)kv->v, (const char *)kv->ks, (const char *)kv->vs, table,
                       nb, bs * stride * esz, q8 ? bs * G * (int64_t)sizeof(float) : 0, 0, 0};
    prefetch_lines(&pf, AHEAD * per_pos);
    while (blk < nb) {
        int n = 0; /* gather the next CHUNK visible positions */
        for (; blk < nb && n < CHUNK; blk++, o = 0) {
            const int64_t first = table[blk] * bs; /* the block's first slot */
            const uint8_t *mb = mask + blk * bs;
            for (; o < bs && n < CHUNK; o++)
                if (mb[o]) {
                    kp[n] = (const char *)kv->k + (first + o) * stride * esz;
                    vp[n] = (const char *)kv->v + (first + o) * stride * esz;
                    if (q8) {
                        ksp[n] = kv->ks + (first + o) * G;
                        vsp[n] = kv->vs + (first + o) * G;
                    }
                    n++;
                }
            if (o < bs)
                break; /* the chunk is full mid-block: resume at slot o */
        }
        if (n == 0)
            break;
        for (int64_t r = 0; r < H; r++) {
            const float *qr = q + r * d;
            const int64_t g = r / R, kv_off = g * d * esz; /* this head's key/value head, as a byte offset into a slot */
            int i = 0;
            if (vec)
                for (; i + 8 <= n; i += 8) { /* 8 keys at a time, summed across lanes in one go */
                    __m256 a[8];
                    for (int z = 0; z < 8; z++)
                        a[z] = _mm256_setzero_ps();
                    for (int64_t c = 0; c < d; c += 8) {
                        __m256 qv = _mm256_loadu_ps(qr + c);
                        for (int z = 0; z < 8; z++)
                            a[z] = _mm256_fmadd_ps(qv, load8(kp[i + z] + kv_off + c * esz, fmt), a[z]);
                    }
                    prefetch_lines(&pf, share / 2);
                    __m128 lo = hsum4(a[0], a[1], a[2], a[3]), hi = hsum4(a[4], a[5], a[6], a[7]);
                    __m256 dots = _mm256_set_m128(hi, lo);
                    if (q8)
                        dots = _mm256_mul_ps(dots, _mm256_set_ps(ksp[i + 7][g], ksp[i + 6][g], ksp[i + 5][g],
                                                                 ksp[i + 4][g], ksp[i + 3][g], ksp[i + 2][g],
                                                                 ksp[i + 1][g], ksp[i][g]));
                    _mm256_storeu_ps(s[r] + i, _mm256_mul_ps(dots, _mm256_set1_ps(scale)));
                }
            for (; i < n; i++)
                s[r][i] = q8 ? scale * (ksp[i][g] * dot_kv(qr, kp[i] + kv_off, d, KV_I8))
                             : scale * dot_kv(qr, kp[i] + kv_off, d, fmt);
            float mx = m[r];
            __m256 vm = _mm256_set1_ps(mx);
            i = 0;
            for (; i + 8 <= n; i += 8)
                vm = _mm256_max_ps(vm, _mm256_loadu_ps(s[r] + i));
            mx = hmax1(vm);
            for (; i < n; i++)
                mx = s[r][i] > mx ? s[r][i] : mx;
            float corr = exp1(m[r] - mx); /* exp(-inf) of the first chunk is 0 after the clamp: acc is 0 */
            m[r] = mx;
            __m256 vc = _mm256_set1_ps(corr);
            for (int64_t c = 0; c + 8 <= d; c += 8)
                _mm256_storeu_ps(acc + r * d + c, _mm256_mul_ps(_mm256_loadu_ps(acc + r * d + c), vc));
            for (int64_t c = d / 8 * 8; c < d; c++)
                acc[r * d + c] *= corr;
            __m256 vs = _mm256_setzero_ps();
            vm = _mm256_set1_ps(mx);
            i = 0;
            for (; i + 8 <= n; i += 8) {
                __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s[r] + i), vm));
                _mm256_storeu_ps(s[r] + i, e);
                vs = _mm256_add_ps(vs, e);
            }
            float sum = hsum1(vs);
            for (; i < n; i++) {
                s[r][i] = exp1(s[r][i] - mx);
                sum += s[r][i];
            }
            l[r] = l[r] * corr + sum;
        }
        /* acc[r] += sum_i p[r][i] v_i: 64 dims of one head in eight registers at a time (fixed-size
         * loops, so the accumulators stay in registers), then any 8-dim rest, then scalars */
        for (int64_t r = 0; r < H; r++) {
            float *ar = acc + r * d;
            const float *pr = s[r];
            const int64_t g = r / R, kv_off = g * d * esz;
            if (q8) { /* the value scales ride on the weights: p_i s_i (int8 v_i) */
                for (int i = 0; i < n; i++)
                    pw[i] = pr[i] * vsp[i][g];
                pr = pw;
            }
            int64_t c = 0;
            if (vec)
                for (; c + 64 <= d; c += 64) {
                    __m256 a[8];
                    for (int z = 0; z < 8; z++)
                        a[z] = _mm256_loadu_ps(ar + c + 8 * z);
                    for (int i = 0; i < n; i++) {
                        __m256 p = _mm256_broadcast_ss(pr + i);
                        for (int z = 0; z < 8; z++)
                            a[z] = _mm256_fmadd_ps(p, load8(vp[i] + kv_off + (c + 8 * z) * esz, fmt), a[z]);
                        if (c == 0 && i % 8 == 7)
                            prefetch_lines(&pf, share - share / 2);
                    }
                    for (int z = 0; z < 8; z++)
                        _mm256_storeu_ps(ar + c + 8 * z, a[z]);
                }
            if (vec)
                for (; c + 8 <= d; c += 8) {
                    __m256 a = _mm256_loadu_ps(ar + c);
                    for (int i = 0; i < n; i++) {
                        a = _mm256_fmadd_ps(_mm256_broadcast_ss(pr + i), load8(vp[i] + kv_off + c * esz, fmt), a);
                        if (c == 0 && i % 8 == 7)
                            prefetch_lines(&pf, share - share / 2);
                    }
                    _mm256_storeu_ps(ar + c, a);
                }
            for (; c < d; c++)
                for (int i = 0; i < n; i++)
                    ar[c] += pr[i] * load1(vp[i] + kv_off + c * esz, fmt);
        }
    }
    for (int64_t r = 0; r < H; r++) {
        float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f; /* no visible key: zeros */
        for (int64_t c = 0; c < d; c++)
            acc[r * d + c] *= inv;
    }
}

static void attend_seq(const float *q, int64_t H, int64_t R, int64_t d, const struct paged *kv,
                       const int64_t *table, const uint8_t *mask, int64_t S, float scale, float *acc)
{
    if (kv->fmt == KV_I8)
        attend_body(q, H, R, d, kv, table, mask, S, scale, acc, KV_I8);
    else if (kv->fmt == KV_F16)
        attend_body(q, H, R, d, kv, table, mask, S, scale, acc, KV_F16);
    else
        attend_body(q, H, R, d, kv, table, mask, S, scale, acc, KV_F32);
}

/* Decode attention's work items: one per sequence, or, when the sequences are fewer than the threads, one per
 * key/value head of each (its R query heads against that head's keys and values), so one sequence's attention
 * uses every thread. A head's arithmetic is the same either way. */
static int64_t attend_items(int64_t B, int64_t G, int nt)
{
    return B < nt ? B * G : B;
}

/* Work item i of `items` (attend_items) over B sequences: sequence b's queries [H, d] at q + b ldq, its output
 * out [B, H, d]; table [B, nb], mask [B, nb bs]. */
static void attend_item(int64_t i, int64_t items, int64_t B, const float *q, int64_t ldq, int64_t H, int64_t d,
                        const struct paged *kv, const int64_t *table, int64_t nb, const uint8_t *mask, float scale,
                        float *out)
{
    const int64_t G = kv->G, R = H / G, S = nb * kv->bs, per = items / B, b = i / per, g = i % per;
    if (per == 1) {
        attend_seq(q + b * ldq, H, R, d, kv, table + b * nb, mask + b * S, S, scale, out + b * H * d);
        return;
    }
    /* key/value head g of every slot starts g d elements in (a slot is [G, d]; int8 scales [G]) */
    const int64_t esz = KV_BYTES(kv->fmt);
    const struct paged one = {(const char *)kv->k + g * d * esz, (const char *)kv->v + g * d * esz,
                              kv->ks ? kv->ks + g : NULL, kv->vs ? kv->vs + g : NULL, kv->bs, G, kv->fmt};
    attend_seq(q + b * ldq + g * R * d, R, R, d, &one, table + b * nb, mask + b * S, S, scale,
               out + (b * H + g * R) * d);
}

/* Whether a cache of format fmt comes with exactly the scales it needs (int8's, no other's) */
static int kv_ok(int64_t fmt, const float *ks, const float *vs)
{
    return fmt >= KV_F32 && fmt <= KV_F16 && !ks == !vs && !ks == (fmt != KV_I8);
}

/* out[b, h] = softmax(scale q[b, h] K_b^T) V_b over the visible slots of sequence b.
 * q [B, H, d]; kc/vc [N, bs, G, d] of format fmt: float32, float16, or int8 with scales ks/vs [N, bs, G] (NULL
 * otherwise); table [B, nb]; mask [B, nb * bs] (1 = visible); out [B, H, d].
 * Returns 0, or -1 when H is not a multiple of G or exceeds MAX_H, or the scales do not fit the format. */
int swarm_decode_attention(const float *q, int64_t B, int64_t H, int64_t d, const void *kc, const void *vc,
                           const float *ks, const float *vs, int64_t fmt, int64_t bs, int64_t G,
                           const int64_t *table, int64_t nb, const uint8_t *mask, float scale, float *out)
{
    if (G <= 0 || H % G != 0 || H > MAX_H || !kv_ok(fmt, ks, vs))
        return -1;
    const struct paged kv = {kc, vc, ks, vs, bs, G, fmt};
#pragma omp parallel
    {
        const int64_t items = attend_items(B, G, omp_get_num_threads());
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < items; i++)
            attend_item(i, items, B, q, H * d, H, d, &kv, table, nb, mask, scale, out);
    }
    return 0;
}

/* ---- paged prefill attention ----------------------------------------------------------------------- */

#define QT 8 /* query positions per work item */

/* s[r][j] += nothing: scores of one query row pair against nk keys spaced ldk apart (4 at a time through
 * tile4, then one by one). a1 may be NULL (an odd row out). */
static void score_rows(const float *a0, const float *a1, const float *k, int64_t ldk, int64_t nk, int64_t d,
                       float *s0, float *s1)
{
    int64_t j = 0;
    for (; j + 4 <= nk; j += 4)
        tile4(a0, a1, k + j * ldk, ldk, d, s0 + j, a1 ? s1 + j : NULL, NULL, 0, 0);
    for (; j < nk; j++) {
        s0[j] = dot(a0, k + j * ldk, d);
        if (a1)
            s1[j] = dot(a1, k + j * ldk, d);
    }
}

/* acc0 += sum_j p0[j] v_j (and acc1 with p1, unless NULL) for nk values spaced ldv apart: 32 dims of both
 * rows in eight registers at a time, then any 8-dim rest, then scalars. */
static void pv_rows(const float *p0, const float *p1, const float *v, int64_t ldv, int64_t nk, int64_t d,
                    float *acc0, float *acc1)
{
    int64_t c = 0;
    if (d % 8 == 0 && p1) {
        for (; c + 32 <= d; c += 32) {
            __m256 a[8];
            for (int z = 0; z < 4; z++) {
                a[z] = _mm256_loadu_ps(acc0 + c + 8 * z);
                a[4 + z] = _mm256_loadu_ps(acc1 + c + 8 * z);
            }
            for (int64_t j = 0; j < nk; j++) {
                const float *vj = v + j * ldv + c;
                __m256 b0 = _mm256_broadcast_ss(p0 + j), b1 = _mm256_broadcast_ss(p1 + j);
                for (int z = 0; z < 4; z++) {
                    __m256 vv = _mm256_loadu_ps(vj + 8 * z);
                    a[z] = _mm256_fmadd_ps(b0, vv, a[z]);
                    a[4 + z] = _mm256_fmadd_ps(b1, vv, a[4 + z]);
                }
            }
            for (int z = 0; z < 4; z++) {
                _mm256_storeu_ps(acc0 + c + 8 * z, a[z]);
                _mm256_storeu_ps(acc1 + c + 8 * z, a[4 + z]);
            }
        }
    }
    if (d % 8 == 0)
        for (; c < d; c += 8) {
            __m256 a0 = _mm256_loadu_ps(acc0 + c), a1 = p1 ? _mm256_loadu_ps(acc1 + c) : a0;
            for (int64_t j = 0; j < nk; j++) {
                __m256 vv = _mm256_loadu_ps(v + j * ldv + c);
                a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p0 + j), vv, a0);
                if (p1)
                    a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(p1 + j), vv, a1);
            }
            _mm256_storeu_ps(acc0 + c, a0);
            if (p1)
                _mm256_storeu_ps(acc1 + c, a1);
        }
    for (; c < d; c++)
        for (int64_t j = 0; j < nk; j++) {
            acc0[c] += p0[j] * v[j * ldv + c];
            if (p1)
                acc1[c] += p1[j] * v[j * ldv + c];
        }
}

/* A block's int8 or float16 keys or values of head g (nk slots spaced ld elements apart) as floats [nk, d],
 * converted exactly */
static void widen_block(const char *x, int64_t ld, int64_t nk, int64_t d, int fmt, float *out)
{
    const int64_t esz = KV_BYTES(fmt);
    for (int64_t j = 0; j < nk; j++) {
        const char *xr = x + j * ld * esz;
        float *o = out + j * d;
        int64_t c = 0;
        if (fmt == KV_I8)
            for (; c + 8 <= d; c += 8)
                _mm256_storeu_ps(o + c, load8(xr + c, KV_I8));
        else
            for (; c + 8 <= d; c += 8)
                _mm256_storeu_ps(o + c, load8(xr + 2 * c, KV_F16));
        for (; c < d; c++)
            o[c] = load1(xr + c * esz, fmt);
    }
}

/* out[i, h] = softmax(scale q[i, h] K^T) V over the keys query i sees: the Q queries sit at the last Q of
 * the sequence's S positions, query i at p = S - Q + i sees keys j <= p (and j > p - window when window > 0).
 * q [Q, H, d]; kc/vc [N, bs, G, d] read in place through table [nb], of format fmt: float32, float16, or int8
 * with scales ks/vs [N, bs, G] (NULL otherwise); out [Q, H, d].
 * A work item is up to QT queries times the R query heads of one key/value head: their rows share every
 * key and value loaded, block by block, with an online softmax per row. An int8 or float16 block is widened
 * to floats once per work item (exactly; int8's scales are folded in as the decode kernel does, a key's into
 * its scores and a value's into its softmax weights), so the float code below scores and sums it.
 * Returns 0, -1 when H is not a multiple of G, S < Q or the scales do not fit the format, -2 when memory runs
 * out. */
int swarm_prefill_attention(const float *q, int64_t Q, int64_t H, int64_t d, const void *kc, const void *vc,
                            const float *ks, const float *vs, int64_t fmt, int64_t bs, int64_t G,
                            const int64_t *table, int64_t S, float scale, int64_t window, float *out)
{
    if (G <= 0 || H % G != 0 || S < Q || !kv_ok(fmt, ks, vs))
        return -1;
    const int64_t R = H / G, tiles = (Q + QT - 1) / QT, rows_max = QT * R, ld = G * d;
    const int q8 = fmt == KV_I8, wide_in = fmt != KV_F32;
    int failed = 0;
#pragma omp parallel
    {
        float *m = malloc(rows_max * sizeof *m), *l = malloc(rows_max * sizeof *l);
        float *acc = malloc(rows_max * d * sizeof *acc), *sc = malloc(rows_max * bs * sizeof *sc);
        float *wide = wide_in ? malloc(2 * bs * d * sizeof *wide) : NULL; /* a block's keys, then its values */
        if (!m || !l || !acc || !sc || (wide_in && !wide)) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < tiles * G; item++) {
            if (failed)
                continue;
            const int64_t g = item % G, t0 = item / G * QT, nq = Q - t0 < QT ? Q - t0 : QT, rows = nq * R;
            const int64_t first = S - Q + t0, last = first + nq - 1; /* positions of the tile's queries */
            int64_t lo = window > 0 && first - window + 1 > 0 ? first - window + 1 : 0;
            for (int64_t r = 0; r < rows; r++) {
                m[r] = -INFINITY;
                l[r] = 0.0f;
            }
            memset(acc, 0, rows * d * sizeof *acc);
            /* row r is query t0 + r / R, head g R + r % R */
#define QROW(r) (q + ((t0 + (r) / R) * H + g * R + (r) % R) * d)
            for (int64_t b = lo / bs; b * bs <= last; b++) {
                const int64_t j0 = b * bs, nk = last + 1 - j0 < bs ? last + 1 - j0 : bs;
                const float *kb, *vb, *ksb = NULL, *vsb = NULL; /* int8: the block's scales of head g */
                int64_t ldb = ld;
                if (wide_in) {
                    const int64_t at = (table[b] * bs * ld + g * d) * KV_BYTES(fmt);
                    widen_block((const char *)kc + at, ld, nk, d, (int)fmt, wide);
                    widen_block((const char *)vc + at, ld, nk, d, (int)fmt, wide + bs * d);
                    kb = wide, vb = wide + bs * d, ldb = d;
                    if (q8)
                        ksb = ks + table[b] * bs * G + g, vsb = vs + table[b] * bs * G + g;
                } else {
                    kb = (const float *)kc + table[b] * bs * ld + g * d;
                    vb = (const float *)vc + table[b] * bs * ld + g * d;
                }
                for (int64_t r = 0; r < rows; r += 2)
                    score_rows(QROW(r), r + 1 < rows ? QROW(r + 1) : NULL, kb, ldb, nk, d, sc + r * bs,
                               sc + (r + 1) * bs);
                for (int64_t r = 0; r < rows; r++) {
                    const int64_t p = first + r / R; /* keys [a, z) of this block are visible to row r */
                    int64_t a = window > 0 && p - window + 1 > j0 ? p - window + 1 - j0 : 0;
                    int64_t z = p + 1 - j0 < nk ? p + 1 - j0 : nk;
                    float *sr = sc + r * bs;
                    if (a >= z) {
                        memset(sr, 0, nk * sizeof *sr);
                        continue;
                    }
                    if (q8)
                        for (int64_t j = 0; j < nk; j++)
                            sr[j] *= ksb[j * G];
                    float mx = m[r];
                    for (int64_t j = a; j < z; j++)
                        mx = sr[j] * scale > mx ? sr[j] * scale : mx;
                    float corr = exp1(m[r] - mx);
                    m[r] = mx;
                    /* p = e^(scale s - mx) over the whole block, 8 at a time, then zeros where r sees no key */
                    const __m256 vscale = _mm256_set1_ps(scale), vmx = _mm256_set1_ps(mx);
                    __m256 vsum = _mm256_setzero_ps();
                    int64_t j = 0;
                    for (; j + 8 <= nk; j += 8)
                        _mm256_storeu_ps(sr + j, exp8(_mm256_fmsub_ps(_mm256_loadu_ps(sr + j), vscale, vmx)));
                    for (; j < nk; j++)
                        sr[j] = exp1(sr[j] * scale - mx);
                    memset(sr, 0, a * sizeof *sr);
                    memset(sr + z, 0, (nk - z) * sizeof *sr);
                    for (j = 0; j + 8 <= nk; j += 8)
                        vsum = _mm256_add_ps(vsum, _mm256_loadu_ps(sr + j));
                    float sum = hsum1(vsum);
                    for (; j < nk; j++)
                        sum += sr[j];
                    l[r] = l[r] * corr + sum;
                    for (int64_t c = 0; c < d; c++)
                        acc[r * d + c] *= corr;
                    if (q8) /* summed into l unscaled: the value scales ride on the weights from here */
                        for (j = 0; j < nk; j++)
                            sr[j] *= vsb[j * G];
                }
                for (int64_t r = 0; r < rows; r += 2)
                    pv_rows(sc + r * bs, r + 1 < rows ? sc + (r + 1) * bs : NULL, vb, ldb, nk, d, acc + r * d,
                            acc + (r + 1) * d);
            }
            for (int64_t r = 0; r < rows; r++) {
                float inv = 1.0f / l[r], *o = out + ((t0 + r / R) * H + g * R + r % R) * d;
                for (int64_t c = 0; c < d; c++)
                    o[c] = acc[r * d + c] * inv;
            }
#undef QROW
        }
        free(m); free(l); free(acc); free(sc); free(wide);
    }
    return failed ? -2 : 0;
}

/* ---- fused decode blocks ----------------------------------------------------------------------------- */

/* What every layer's blocks share in one decode step of B sequences with one new token each. */
struct decode_step {
    float *x; /* [B, D] hidden states, updated in place block after block */
    int64_t B;
    const float *cos, *sin; /* [B, d] */
    const int64_t *slots, *table; /* [B] where each new key/value goes, [B, nb] block tables */
    int64_t nb;
};

/* A layer's attention block, fixed for the engine's life: its weights and its cache.
 * qk_norm: 0 none, 1 per head (weights [d]), 2 over the whole q and k projections (weights [H d], [G d]). */
struct attention_layer {
    int64_t D;
    const float *norm_w;
    float eps;
    struct qmat wqkv; /* [(H + 2G) d, D] */
    const float *bqkv; /* bias or NULL */
    int64_t H, G, d, qk_norm;
    const float *q_norm_w, *k_norm_w;
    float qk_eps;
    void *kc, *vc; /* [N, bs, G, d] of format kv_fmt: float32, float16, or int8 with scales ks/vs */
    float *ks, *vs; /* [N, bs, G], NULL but for an int8 cache */
    int64_t kv_fmt, bs;
    float scale;
    struct qmat wo; /* [D, H d] */
    const float *bo; /* bias or NULL */
    float mult; /* residual multiplier */
};

/* x += mult * y over rows [B, D], as torch's x + y (mult 1) or x + y * mult: one rounding per operation */
static void add_rows(float *x, const float *y, int64_t B, int64_t D, float mult)
{
#pragma omp for
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = b * D; i < (b + 1) * D; i++)
            x[i] = mult == 1.0f ? x[i] + y[i] : x[i] + y[i] * mult;
}

/* Inside a team: h = RMSNorm(x) over rows [B, D], then out [B, N] = h W^T (+ bias), then a barrier. Sets
 * *failed (shared) when this thread's scratch cannot be allocated. */
static void norm_linear(const float *x, int64_t B, int64_t D, const float *norm_w, float eps, float *h,
                        const struct qmat *w, int64_t N, const float *bias, float *out, int tid, int nt, int *failed)
{
#pragma omp for
    for (int64_t b = 0; b < B; b++)
        rms_row(x + b * D, D, norm_w, eps, h + b * D);
    if (linear_part(h, B, D, w, N, bias, out, tid, nt)) {
#pragma omp atomic write
        *failed = 1;
    }
#pragma omp barrier
}

/* One layer's attention block over a decode step, in one OpenMP region: x += mult * o_proj(attention(rotary(
 * qk_norm(qkv(norm(x)))))), each new key and value written to its slot first; mask [B, nb bs] (1 = visible) is
 * the layer's (sliding windows differ). Every piece is the kernel the separate ops run, so the result equals
 * theirs bit for bit. Returns 0, -1 for heads the attention kernel cannot take, -2 when memory runs out. */
int swarm_attention_block(const struct attention_layer *a, const struct decode_step *st, const uint8_t *mask)
{
    const int64_t B = st->B, D = a->D, H = a->H, G = a->G, d = a->d, Nq = (H + 2 * G) * d;
    if (G <= 0 || H % G != 0 || H > MAX_H || !kv_ok(a->kv_fmt, a->ks, a->vs))
        return -1;
    const struct paged kv = {a->kc, a->vc, a->ks, a->vs, a->bs, G, a->kv_fmt};
    int failed = 0;
    float *h = malloc((B * D + 1) * sizeof *h), *qkv = malloc((B * Nq + 1) * sizeof *qkv);
    float *att = malloc((B * H * d + 1) * sizeof *att), *o = malloc((B * D + 1) * sizeof *o);
    if (!h || !qkv || !att || !o) {
        free(h); free(qkv); free(att); free(o);
        return -2;
    }
#pragma omp parallel
    {
        const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
        norm_linear(st->x, B, D, a->norm_w, a->eps, h, &a->wqkv, Nq, a->bqkv, qkv, tid, nt, &failed);
#pragma omp for
        for (int64_t b = 0; b < B; b++) {
            if (failed) /* shared, set before norm_linear's barrier */
                continue;
            float *q = qkv + b * Nq, *k = q + H * d, *v = k + G * d;
            if (a->qk_norm == 1) {
                for (int64_t r = 0; r < H; r++)
                    rms_row(q + r * d, d, a->q_norm_w, a->qk_eps, q + r * d);
                for (int64_t g = 0; g < G; g++)
                    rms_row(k + g * d, d, a->k_norm_w, a->qk_eps, k + g * d);
            } else if (a->qk_norm == 2) {
                rms_row(q, H * d, a->q_norm_w, a->qk_eps, q);
                rms_row(k, G * d, a->k_norm_w, a->qk_eps, k);
            }
            for (int64_t r = 0; r < H + G; r++) /* the query heads, then the key heads that follow them */
                rotary_row(q + r * d, d, st->cos + b * d, st->sin + b * d);
            if (a->kv_fmt == KV_I8) {
                store_int8(k, G, d, (int8_t *)a->kc + st->slots[b] * G * d, a->ks + st->slots[b] * G);
                store_int8(v, G, d, (int8_t *)a->vc + st->slots[b] * G * d, a->vs + st->slots[b] * G);
            } else if (a->kv_fmt == KV_F16) {
                store_f16(k, G * d, (uint16_t *)a->kc + st->slots[b] * G * d);
                store_f16(v, G * d, (uint16_t *)a->vc + st->slots[b] * G * d);
            } else {
                memcpy((float *)a->kc + st->slots[b] * G * d, k, G * d * sizeof(float));
                memcpy((float *)a->vc + st->slots[b] * G * d, v, G * d * sizeof(float));
            }
        }
        const int64_t items = attend_items(B, G, nt);
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < items; i++)
            if (!failed)
                attend_item(i, items, B, qkv, Nq, H, d, &kv, st->table, st->nb, mask, a->scale, att);
        if (!failed && linear_part(att, B, H * d, &a->wo, D, a->bo, o, tid, nt)) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp barrier
        if (!failed) /* shared, read after the barrier: every thread takes the same branch */
            add_rows(st->x, o, B, D, a->mult);
    }
    free(h); free(qkv); free(att); free(o);
    return failed ? -2 : 0;
}

/* A layer's MoE block (routed experts, no shared expert), fixed for the engine's life. */
struct moe_layer {
    int64_t D;
    const float *norm_w;
    float eps;
    const float *router_w; /* [E, D] */
    int64_t E, K, mode, renorm; /* as swarm_route */
    struct qmat gate_up, down; /* [E, 2I, D], [E, D, I] */
    int64_t I;
    float mult;
};

/* One layer's MoE block over a decode step, in one OpenMP region: x += mult * experts(norm(x)) routed by
 * router(norm(x)); the routing goes to weights/ids [B, K]. The same kernels as the separate ops.
 * Returns 0, -1 for a routing swarm_route refuses, -2 when memory runs out. */
int swarm_moe_block(const struct moe_layer *m, const struct decode_step *st, float *weights, int64_t *ids)
{
    const int64_t B = st->B, D = m->D;
    float *h = malloc((B * D + 1) * sizeof *h), *logits = malloc((B * m->E + 1) * sizeof *logits);
    float *out = malloc((B * D + 1) * sizeof *out);
    struct experts e = {m->gate_up, m->down, m->E, m->I, D, B, NULL, NULL, NULL, NULL, NULL, out, NULL, NULL, NULL,
                        NULL};
    int code = 0, failed = 0;
    if (!h || !logits || !out) {
        free(h); free(logits); free(out);
        return -2;
    }
#pragma omp parallel
    {
        const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
        const struct qmat router = {W_F32, m->router_w, NULL};
        norm_linear(st->x, B, D, m->norm_w, m->eps, h, &router, m->E, NULL, logits, tid, nt, &failed);
#pragma omp single
        if (!failed) {
            code = swarm_route(logits, B, m->E, m->K, m->mode, m->renorm, weights, ids);
            if (!code)
                code = experts_plan(&e, h, weights, ids, m->K);
        }
        if (!code && !failed) { /* shared, read after the single's barrier: every thread takes the same branch */
            experts_run(&e, tid, nt, &failed);
#pragma omp barrier
            if (!failed)
                add_rows(st->x, out, B, D, m->mult);
        }
    }
    if (!code && e.start)
        experts_free(&e);
    free(h); free(logits); free(out);
    return code ? code : failed ? -2 : 0;
}

/* A decode step through L layers: layer l's attention block (att[l], its key mask masks[l]) then its MoE block
 * (moe[l], its routing into weights/ids + l B K), as the separate calls would run them. Stops at the first block
 * that fails and returns its code. */
static int decode_layers(const struct attention_layer *const *att, const struct moe_layer *const *moe, int64_t L,
                         const struct decode_step *st, uint8_t *const *masks, float *weights, int64_t *ids)
{
    for (int64_t l = 0; l < L; l++) {
        int code = swarm_attention_block(att[l], st, masks[l]);
        if (!code)
            code = swarm_moe_block(moe[l], st, weights + l * st->B * moe[l]->K, ids + l * st->B * moe[l]->K);
        if (code)
            return code;
    }
    return 0;
}

/* A model whose every block fuses, fixed for the engine's life: the embedding, the layers, the final norm and
 * (when the head's product is the one `swarm_qlinear` computes) the head. */
struct decode_model {
    int64_t L, V, D;
    const struct attention_layer *const *att; /* [L] */
    const struct moe_layer *const *moe; /* [L] */
    const int64_t *windows; /* [L] each layer's sliding window in tokens, 0 for none */
    const float *embed; /* [V, D] */
    float embed_mult;
    const float *norm_w;
    float eps;
    struct qmat head; /* [N, D]; w NULL: no head, the caller computes the logits */
    int64_t N;
};

/* A decode step's tokens: B sequences with one new token each. */
struct decode_tokens {
    int64_t B;
    const int64_t *ids, *pos; /* [B] each new token and its position */
    const int64_t *table; /* [B, nb] block tables, padded */
    int64_t nb;
    const float *cos, *sin; /* [P, d] the rope table, row p for position p */
    int64_t P;
    int64_t logits; /* 0: out gets the normed hidden states even where the model has a head */
};

/* A whole decode step in one call, from token ids to logits: x = embed[ids] * embed_mult, every layer
 * (decode_layers, with the slots, rope rows and key masks built here from the positions and block tables),
 * then out = head(RMSNorm(x)) [B, N], or RMSNorm(x) [B, D] for a model without a head here or a step that asks
 * for no logits. The same kernels in
 * the same order as the modules' ops (the table lookups are copies, the masks `PagedBatch.decode_mask`'s), so
 * the same bits. Routing into weights/ids [L, B, K]. Returns 0, -1 for a token, position or block outside its
 * table, -2 when memory runs out, or a block's code. */
int swarm_decode_model(const struct decode_model *m, const struct decode_tokens *in, float *out, float *weights,
                       int64_t *ids)
{
    const int64_t B = in->B, D = m->D, L = m->L, nb = in->nb, bs = m->att[0]->bs, S = nb * bs, d = m->att[0]->d;
    for (int64_t b = 0; b < B; b++)
        if (in->ids[b] < 0 || in->ids[b] >= m->V || in->pos[b] < 0 || in->pos[b] >= in->P || in->pos[b] >= S)
            return -1;
    float *x = malloc((B * D + 1) * sizeof *x), *rope = malloc((2 * B * d + 1) * sizeof *rope);
    int64_t *slots = malloc((B + 1) * sizeof *slots);
    uint8_t **masks = calloc(L, sizeof *masks), *own = malloc(L * B * S + 1);
    int code = !x || !rope || !slots || !masks || !own ? -2 : 0;
    for (int64_t b = 0; b < B && !code; b++) {
        const int64_t p = in->pos[b];
        const float *e = m->embed + in->ids[b] * D;
        for (int64_t i = 0; i < D; i++)
            x[b * D + i] = m->embed_mult == 1.0f ? e[i] : e[i] * m->embed_mult;
        memcpy(rope + b * d, in->cos + p * d, d * sizeof *rope);
        memcpy(rope + (B + b) * d, in->sin + p * d, d * sizeof *rope);
        slots[b] = in->table[b * nb + p / bs] * bs + p % bs;
    }
    for (int64_t l = 0; l < L && !code; l++) { /* a mask per window: layers that share one share it */
        for (int64_t k = 0; k < l && !masks[l]; k++)
            if (m->windows[k] == m->windows[l])
                masks[l] = masks[k];
        if (masks[l])
            continue;
        masks[l] = own + l * B * S;
        for (int64_t b = 0; b < B; b++) {
            const int64_t len = in->pos[b] + 1, w = m->windows[l];
            for (int64_t j = 0; j < S; j++)
                masks[l][b * S + j] = j < len && (w == 0 || j >= len - w);
        }
    }
    const struct decode_step st = {x, B, rope, rope + B * d, slots, in->table, nb};
    if (!code)
        code = decode_layers(m->att, m->moe, L, &st, masks, weights, ids);
    const int head = m->head.w && in->logits;
    float *h = head ? malloc((B * D + 1) * sizeof *h) : out;
    if (!code && !h)
        code = -2;
    if (!code) {
        swarm_rms_norm(x, B, 1, D, D, m->norm_w, m->eps, h);
        if (head)
            code = swarm_qlinear(h, B, D, m->head.fmt, m->head.w, m->head.s, m->N, NULL, out);
    }
    if (h != out)
        free(h);
    free(x); free(rope); free(slots); free(masks); free(own);
    return code;
}
