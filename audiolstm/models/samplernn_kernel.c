/* SampleRNN's per-sample step in C: the sample MLP and the draw for one lowest frame.
 *
 * Why C: at the default sizes one sample is ~0.2 MFLOP per stream, a few microseconds of
 * arithmetic, while each tensor operation costs microseconds of dispatch; ~16 of them per
 * sample made TorchScript's loop ~5x slower than its arithmetic (bench/RESULTS.md). Here
 * a whole frame of samples is one call with no allocation and no dispatch, one group of
 * streams per OpenMP thread (samplernn_frames).
 *
 * The maths is samplernn_step.frame_samples' (its docstring has the derivation), the
 * sums in another order, so the logits equal teacher forcing to float32 rounding:
 *   x0 = cond[r] + sum_p table[p*Q + code[t-F+p]]        (embedding + mlp_in, folded)
 *   x1 = b1 + relu(x0) W1;  x2 = b2 + relu(x1) W2;  logits = b3 + relu(x2) W3
 *   code[t] = argmax(logits)                              (uniform == NULL)
 *           = first k with cdf[k] >= u * cdf[Q-1]          (inverse CDF of softmax(logits/T))
 * with top_p < 1 the masses outside the nucleus are zeroed first (models/draw.py's rule).
 * Every width (H, H2, Qp) must be a multiple of ALIGN_FLOATS (the caller zero-pads);
 * weights are row-major (in, out). Built by samplernn_kernel.py with the system compiler.
 */
#include <stdint.h>
#include <string.h>

#ifdef __AVX512F__
#define VW 16
#else
#define VW 8
#endif
/* the caller pads every width to a multiple of this (8 vectors: the widest tile) */
#define ALIGN_FLOATS 128

typedef float vf __attribute__((vector_size(VW * 4), aligned(4)));
typedef int32_t vi __attribute__((vector_size(VW * 4), aligned(4)));
#define LD(p) (*(const vf *)(p))
#define ST(p, v) (*(vf *)(p) = (v))
#define UNROLL _Pragma("GCC unroll 16")

int samplernn_align_floats(void) { return ALIGN_FLOATS; }

/* One frame's work for one group of streams; filled once by the caller, t0/m/uniform/
 * logits_at updated per call. Field order and types mirror samplernn_kernel.FrameArgs. */
typedef struct {
    int64_t batch, frame, q, h, h2, qp; /* streams, F, levels, widths (padded) */
    int64_t *codes;                     /* (batch, codes_stride) int64 */
    int64_t codes_stride;
    const float *table;                 /* (F*Q, h): folded embedding x mlp_in */
    const float *cond;                  /* (batch, F, h): this frame's conditioning */
    const float *w1, *b1, *w2, *b2, *w3, *b3;
    float *scratch;                     /* batch * (h + 2*h2 + 3*qp) floats */
    const float *uniform;               /* (m, uniform_stride) in (0, 1], or NULL */
    int64_t uniform_stride;
    double inv_t;                       /* 1 / temperature */
    double top_p;                       /* nucleus: 1 = off */
    float *logits;                      /* (batch, logits_stride) or NULL */
    int64_t logits_stride, logits_at;   /* logits of sample t0 start at logits_at */
    int64_t t0, m;                      /* samples t0 .. t0 + m - 1 */
} FrameArgs;

/* y = bias + relu(x) W for a tile of NB streams x NO vectors of outputs, kept in
 * registers while the inputs stream by (x is already relu'd). */
#define TILE(NB, NO)                                                                     \
    static void tile_##NB##_##NO(const float *x, int64_t in, const float *w, int64_t out, \
                                 const float *bias, float *y, int64_t o) {              \
        vf acc[NB][NO];                                                                  \
        UNROLL for (int k = 0; k < NB; k++)                                              \
            UNROLL for (int v = 0; v < NO; v++) acc[k][v] = LD(bias + o + v * VW);       \
        for (int64_t i = 0; i < in; i++) {                                               \
            const float *wi = w + i * out + o;                                           \
            vf wv[NO];                                                                   \
            UNROLL for (int v = 0; v < NO; v++) wv[v] = LD(wi + v * VW);                 \
            UNROLL for (int k = 0; k < NB; k++) {                                        \
                float xi = x[k * in + i];                                                \
                UNROLL for (int v = 0; v < NO; v++) acc[k][v] += xi * wv[v];             \
            }                                                                            \
        }                                                                                \
        UNROLL for (int k = 0; k < NB; k++)                                              \
            UNROLL for (int v = 0; v < NO; v++) ST(y + k * out + o + v * VW, acc[k][v]); \
    }
TILE(8, 2)
TILE(4, 4)
TILE(2, 4)
TILE(1, 8)

static void relu(float *x, int64_t n) {
    for (int64_t e = 0; e < n; e++) x[e] = x[e] > 0.f ? x[e] : 0.f;
}

/* y (B, out) = bias + relu(x) (B, in) @ w (in, out): 8 streams at a time while they last
 * (each weight row read once for 8), then 4, 2, 1 (more outputs per tile, so one stream
 * still has 8 independent sums in flight). */
static void dense(float *x, int64_t batch, int64_t in, const float *w, int64_t out,
                  const float *bias, float *y) {
    relu(x, batch * in);
    int64_t b = 0;
#define RUN(NB, NO)                                                                  \
    for (; b + NB <= batch; b += NB)                                                 \
        for (int64_t o = 0; o < out; o += NO * VW)                                  \
            tile_##NB##_##NO(x + b * in, in, w, out, bias, y + b * out, o);
    RUN(8, 2)
    RUN(4, 4)
    RUN(2, 4)
    RUN(1, 8)
#undef RUN
}

/* The draw is computed in double: float32 masses and running sums (and torch's
 * float32 softmax and cumsum in the fallback loop) round differently, and a draw whose
 * uniform falls within that rounding of a level's edge picks different levels in the two
 * loops (measured at small logits: ~4e-6 of the draws). In double the loops part only
 * where their float32 logits do (~1e-7 of the draws there; bench/RESULTS.md). */
#define VD (VW / 2)
typedef double vd __attribute__((vector_size(VW * 4), aligned(8)));
typedef int64_t vl __attribute__((vector_size(VW * 4), aligned(8)));
typedef float vh __attribute__((vector_size(VW * 2), aligned(4)));

/* exp(x) for x <= 0 in double, to ~1 ulp: 2^n e^r with |r| <= ln2/2 (ln2 split in two
 * for an exact n ln2) and a degree-13 Taylor polynomial (remainder < 1e-17 relative);
 * 0 below -708 (the double normal range), -inf included. */
static inline vd exp_nonpositive(vd x) {
    vl tiny = x < -708.0;
    x = (vd)((vl)x & ~tiny); /* 0 there: no -inf or NaN through the arithmetic */
    vd y = x * 1.4426950408889634 - 0.5;
    vl n = __builtin_convertvector(y, vl); /* truncation: ceil(y), y <= 0 */
    vd nf = __builtin_convertvector(n, vd);
    vd r = x - nf * 6.93147180369123816490e-01 - nf * 1.90821492927058770002e-10;
    static const double c[] = {1.0 / 6227020800, 1.0 / 479001600, 1.0 / 39916800,
                               1.0 / 3628800, 1.0 / 362880, 1.0 / 40320, 1.0 / 5040,
                               1.0 / 720, 1.0 / 120, 1.0 / 24, 1.0 / 6, 0.5, 1.0, 1.0};
    vd p = r * c[0] + c[1];
    for (int i = 2; i < 14; i++) p = p * r + c[i];
    vl bits = (n + 1023) << 52;
    vd scale;
    memcpy(&scale, &bits, sizeof scale);
    return (vd)((vl)(p * scale) & ~tiny);
}

static inline double hsum(vd v) {
    double s = 0.0;
    for (int i = 0; i < VD; i++) s += v[i];
    return s;
}

/* S(x): the total of the masses e[0 .. qp) that are >= x. */
static inline double mass_above(const double *e, int64_t qp, double x) {
    vd s = {0};
    for (int64_t v = 0; v < qp / VD; v++) {
        vd ev = *(const vd *)(e + v * VD);
        s += (vd)((vl)ev & (ev >= x));
    }
    return hsum(s);
}

static inline double as_double(uint64_t bits) {
    double x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* The nucleus of the masses e[0 .. qp) (>= 0, largest 1): every mass below the
 * threshold tau zeroed, tau the largest mass whose "mass at least tau", S(tau), reaches
 * top_p * total. That is the mass of the level that crosses top_p when the levels are
 * summed most likely first (above it S stays below the target; at it S reaches it), ties
 * at it kept: models/draw.py's `nucleus`, found without a sort. S is non-increasing, so
 * bisection on the bit patterns of non-negative doubles (ordered as the doubles are)
 * narrows tau to [lo, hi) with S(lo) >= need > S(hi) in ~31 passes over the levels; the
 * masses in that sliver (~1e-9 relative: almost always tau alone) are then tried largest
 * first. Returns the kept total; mass[] is refilled. */
static double nucleus(double *e, int64_t qp, double *mass, double total, double top_p) {
    const double need = top_p * total;
    uint64_t lo = 0, hi = 0x3ff0000000000001ull; /* S(0) = total >= need; S(> 1) = 0 */
    while (hi - lo > (1ull << 32)) {
        const uint64_t mid = lo + (hi - lo) / 2;
        if (mass_above(e, qp, as_double(mid)) >= need) lo = mid;
        else hi = mid;
    }
    const double floor = as_double(lo);
    double ceiling = as_double(hi), tau = floor;
    for (;;) { /* some mass lies in [floor, ceiling): S(floor) > S(ceiling) */
        double best = -1.0;
        for (int64_t k = 0; k < qp; k++)
            if (e[k] >= floor && e[k] < ceiling && e[k] > best) best = e[k];
        if (best < 0.0) break; /* unreachable: S(floor) >= need > S(ceiling) */
        if (mass_above(e, qp, best) >= need) {
            tau = best;
            break;
        }
        ceiling = best;
    }
    double kept = 0.0;
    for (int64_t v = 0; v < qp / VD; v++) {
        vd ev = *(const vd *)(e + v * VD);
        ev = (vd)((vl)ev & (ev >= tau));
        *(vd *)(e + v * VD) = ev;
        mass[v] = hsum(ev);
        kept += mass[v];
    }
    return kept;
}

/* argmax (u == NULL), else the inverse CDF of softmax(l / T) (its nucleus when top_p < 1)
 * at u in (0, 1]: the first level whose cumulative mass reaches u * total, in double (e:
 * qp doubles of scratch). The cumulative sums are taken vector by vector (each vector's
 * mass, then a running sum of those), so the last running sum is the total itself: never
 * past the last level, and never a level of mass 0 (the level drawn is one where the
 * running sum grows to the target). l's padding is overwritten. */
static int64_t draw(float *l, double *e, int64_t q, int64_t qp, const float *u,
                    double inv_t, double top_p) {
    if (!u) {
        int64_t best = 0;
        for (int64_t k = 1; k < q; k++)
            if (l[k] > l[best]) best = k;
        return best;
    }
    float mx = l[0];
    for (int64_t k = 1; k < q; k++) mx = l[k] > mx ? l[k] : mx;
    for (int64_t k = q; k < qp; k++) l[k] = -__builtin_inff(); /* padding: exp -> 0 */
    double mass[qp / VD], total = 0.0;
    for (int64_t v = 0; v < qp / VD; v++) {
        vh lv;
        memcpy(&lv, l + v * VD, sizeof lv);
        vd ev = exp_nonpositive((__builtin_convertvector(lv, vd) - (double)mx) * inv_t);
        *(vd *)(e + v * VD) = ev;
        mass[v] = hsum(ev);
        total += mass[v];
    }
    if (top_p < 1.0) total = nucleus(e, qp, mass, total, top_p);
    const double target = (double)*u * total;
    double run = 0.0;
    int64_t v = 0;
    while (v < qp / VD - 1 && run + mass[v] < target) run += mass[v++];
    int64_t k = v * VD, last = -1;
    for (; k < (v + 1) * VD && k < q; k++) {
        if (e[k] > 0.0) last = k;
        run += e[k];
        if (e[k] > 0.0 && run >= target) return k;
    }
    return last; /* rounding: the in-vector sum fell short of the vector's mass */
}

static void frame(const FrameArgs *a) {
    const int64_t B = a->batch, F = a->frame, H = a->h, H2 = a->h2, Qp = a->qp;
    float *x0 = a->scratch, *x1 = x0 + B * H, *x2 = x1 + B * H2, *x3 = x2 + B * H2;
    double *e = (double *)(x3 + B * Qp); /* the draw's masses: Qp doubles */
    for (int64_t j = 0; j < a->m; j++) {
        const int64_t t = a->t0 + j, r = t % F;
        for (int64_t b = 0; b < B; b++) { /* the folded first layer: F rows + conditioning */
            const int64_t *c = a->codes + b * a->codes_stride + t - F;
            const float *cr = a->cond + (b * F + r) * H;
            float *x = x0 + b * H;
            for (int64_t h = 0; h < H; h += VW) {
                vf s = LD(cr + h);
                for (int64_t p = 0; p < F; p++) s += LD(a->table + (p * a->q + c[p]) * H + h);
                ST(x + h, s);
            }
        }
        dense(x0, B, H, a->w1, H2, a->b1, x1);
        dense(x1, B, H2, a->w2, H2, a->b2, x2);
        dense(x2, B, H2, a->w3, Qp, a->b3, x3);
        for (int64_t b = 0; b < B; b++) {
            float *l = x3 + b * Qp;
            if (a->logits)
                memcpy(a->logits + b * a->logits_stride + a->logits_at + j * a->q, l,
                       a->q * sizeof(float));
            const float *u = a->uniform ? a->uniform + j * a->uniform_stride + b : NULL;
            a->codes[b * a->codes_stride + t] = draw(l, e, a->q, Qp, u, a->inv_t, a->top_p);
        }
    }
}


/* One lowest frame for every group of streams, one group per thread: with OpenMP, in the
 * runtime torch loaded (the same soname), so the threads are torch's intra-op threads,
 * still spinning from the frame tiers' matmuls, and no second pool competes for cores. */
void samplernn_frames(const FrameArgs *groups, int64_t n) {
#pragma omp parallel for num_threads(n) schedule(static, 1)
    for (int64_t g = 0; g < n; g++) frame(groups + g);
}
