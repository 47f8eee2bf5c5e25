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
    float *scratch;                     /* batch * (h + 2*h2 + qp) floats */
    const float *uniform;               /* (m, uniform_stride) in (0, 1], or NULL */
    int64_t uniform_stride;
    float inv_t;                        /* 1 / temperature */
    float top_p;                        /* nucleus: 1 = off */
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

/* exp(x) for x <= 0, to ~1 ulp: 2^n e^r with |r| <= ln2/2 and a degree-7 Taylor
 * polynomial (remainder < 6e-9 relative); 0 below -87 (the float32 normal range). */
static inline vf exp_nonpositive(vf x) {
    vi tiny = x < -87.0f;
    vf y = x * 1.44269504088896341f - 0.5f;
    vi n = __builtin_convertvector(y, vi); /* truncation: ceil(y), y <= 0 */
    vf nf = __builtin_convertvector(n, vf);
    vf r = x - nf * 0.693145751953125f - nf * 1.42860682030941723212e-6f;
    vf p = r * (1.f / 5040) + 1.f / 720;
    p = p * r + 1.f / 120;
    p = p * r + 1.f / 24;
    p = p * r + 1.f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.f;
    p = p * r + 1.f;
    vi bits = (n + 127) << 23;
    vf scale, out;
    memcpy(&scale, &bits, sizeof scale);
    p *= scale;
    memcpy(&bits, &p, sizeof bits);
    bits &= ~tiny;
    memcpy(&out, &bits, sizeof out);
    return out;
}

static inline float hsum(vf v) {
    float s = 0.f;
    for (int i = 0; i < VW; i++) s += v[i];
    return s;
}

/* The nucleus of the masses e[0 .. qp) (>= 0, largest 1): every mass below the
 * threshold tau zeroed, tau the largest float x whose "mass at least x", S(x), reaches
 * top_p * total. That is the mass of the level that crosses top_p when the levels are
 * summed most likely first (larger x: S stays below the target; x down to that mass: S
 * reaches it), ties at it kept: models/draw.py's `nucleus`, found without a sort by
 * bisection on the bit patterns of non-negative floats (ordered as the floats are), ~30
 * passes over the levels. Returns the kept total; mass[] is refilled. */
static float nucleus(float *e, int64_t qp, float *mass, float total, float top_p) {
    const float need = top_p * total;
    uint32_t lo = 0, hi = 0x3f800001u; /* S(0) = total >= need; S(above 1) = 0 < need */
    while (hi - lo > 1) {
        const uint32_t mid = lo + (hi - lo) / 2;
        float x;
        memcpy(&x, &mid, sizeof x);
        vf s = {0};
        for (int64_t v = 0; v < qp / VW; v++) {
            vf ev = LD(e + v * VW);
            s += (vf)((vi)ev & (ev >= x));
        }
        if (hsum(s) >= need) lo = mid;
        else hi = mid;
    }
    float tau, kept = 0.f;
    memcpy(&tau, &lo, sizeof tau);
    for (int64_t v = 0; v < qp / VW; v++) {
        vf ev = LD(e + v * VW);
        ev = (vf)((vi)ev & (ev >= tau));
        ST(e + v * VW, ev);
        mass[v] = hsum(ev);
        kept += mass[v];
    }
    return kept;
}

/* argmax (u == NULL), else the inverse CDF of softmax(l / T) (its nucleus when top_p < 1)
 * at u in (0, 1]: the first level whose cumulative mass reaches u * total. The cumulative
 * sums are taken vector by vector (each vector's mass, then a running sum of those), so
 * the last running sum is the total itself: never past the last level, and never a level
 * of mass 0 (the level drawn is one where the running sum grows to the target). l is
 * overwritten. */
static int64_t draw(float *l, int64_t q, int64_t qp, const float *u, float inv_t,
                    float top_p) {
    if (!u) {
        int64_t best = 0;
        for (int64_t k = 1; k < q; k++)
            if (l[k] > l[best]) best = k;
        return best;
    }
    float mx = l[0];
    for (int64_t k = 1; k < q; k++) mx = l[k] > mx ? l[k] : mx;
    for (int64_t k = q; k < qp; k++) l[k] = -__builtin_inff(); /* padding: exp -> 0 */
    float mass[qp / VW], total = 0.f;
    for (int64_t v = 0; v < qp / VW; v++) {
        vf e = exp_nonpositive((LD(l + v * VW) - mx) * inv_t);
        ST(l + v * VW, e);
        mass[v] = hsum(e);
        total += mass[v];
    }
    if (top_p < 1.f) total = nucleus(l, qp, mass, total, top_p);
    const float target = *u * total;
    float run = 0.f;
    int64_t v = 0;
    while (v < qp / VW - 1 && run + mass[v] < target) run += mass[v++];
    int64_t k = v * VW, last = -1;
    for (; k < (v + 1) * VW && k < q; k++) {
        if (l[k] > 0.f) last = k;
        run += l[k];
        if (l[k] > 0.f && run >= target) return k;
    }
    return last; /* rounding: the in-vector sum fell short of the vector's mass */
}

static void frame(const FrameArgs *a) {
    const int64_t B = a->batch, F = a->frame, H = a->h, H2 = a->h2, Qp = a->qp;
    float *x0 = a->scratch, *x1 = x0 + B * H, *x2 = x1 + B * H2, *x3 = x2 + B * H2;
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
            a->codes[b * a->codes_stride + t] = draw(l, a->q, Qp, u, a->inv_t, a->top_p);
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
