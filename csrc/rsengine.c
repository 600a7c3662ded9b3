/*
 * radseal.codec._engine: integer-only adaptive binary arithmetic coding with
 * context modelling, and the native-depth pixel coder built on it.
 *
 * Layers (each usable on its own, so that other integer sources - e.g. the
 * quantized wavelet coefficients of the lossy codec - can share the coder):
 *
 *   1. RangeEnc / RangeDec: a binary range coder (32-bit range, carry
 *      propagation as in LZMA), probabilities in 1/65536.
 *   2. Bit: an adaptive binary model, two estimators (rate 1/64, and a slow
 *      one from 1/16 to 1/512 following a use counter) averaged. Integer
 *      updates only.
 *   3. IntModel: a signed/unsigned integer coder: zero flag, sign, an
 *      Exp-Golomb-style exponent in unary and the mantissa's top two bits,
 *      each an adaptive Bit chosen by a caller-supplied context index.
 *   4. The pixel coder: a normalized-LMS adaptive linear predictor on the
 *      causal 5 x 3 window (at the image borders, a blend of eight fixed
 *      predictors weighted by their recent local errors), bias cancellation
 *      per texture/activity context, and quantization of the residual with step 2k+1 against the
 *      reconstructed causal neighbours (k = 0: lossless; k >= 1: every pixel
 *      within k, by construction, as JPEG-LS NEAR does).
 *
 * Everything that decides a decoded symbol is integer arithmetic, so every
 * compiler and machine decodes the same symbols. The decoder bounds-checks
 * every byte it reads and every value it builds; a damaged stream decodes to
 * some image or fails with an error, never reads or writes out of bounds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

/* ------------------------------------------------------------------------ */
/* 1. range coder                                                            */

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    uint64_t low;
    uint32_t range;
    uint8_t cache;
    uint64_t cache_size;
    int oom;
} RangeEnc;

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    uint32_t range, code;
    size_t overrun; /* bytes requested past the end */
} RangeDec;

static void enc_put(RangeEnc *e, uint8_t b) {
    if (e->len == e->cap) {
        size_t ncap = e->cap ? e->cap * 2 : 4096;
        uint8_t *nb = (uint8_t *)realloc(e->buf, ncap);
        if (!nb) { e->oom = 1; return; }
        e->buf = nb;
        e->cap = ncap;
    }
    e->buf[e->len++] = b;
}

static void enc_shift_low(RangeEnc *e) {
    if ((uint32_t)e->low < 0xFF000000u || (e->low >> 32) != 0) {
        uint8_t carry = (uint8_t)(e->low >> 32);
        uint8_t temp = e->cache;
        do {
            enc_put(e, (uint8_t)(temp + carry));
            temp = 0xFF;
        } while (--e->cache_size != 0);
        e->cache = (uint8_t)(e->low >> 24);
    }
    e->cache_size++;
    e->low = (e->low & 0x00FFFFFFu) << 8;
}

static void enc_init(RangeEnc *e) {
    memset(e, 0, sizeof(*e));
    e->range = 0xFFFFFFFFu;
    e->cache_size = 1;
}

static void enc_flush(RangeEnc *e) {
    for (int i = 0; i < 5; i++) enc_shift_low(e);
}

static inline uint8_t dec_byte(RangeDec *d) {
    if (d->pos < d->len) return d->buf[d->pos++];
    d->overrun++;
    return 0;
}

static void dec_init(RangeDec *d, const uint8_t *buf, size_t len) {
    d->buf = buf;
    d->len = len;
    d->pos = 0;
    d->overrun = 0;
    d->range = 0xFFFFFFFFu;
    d->code = 0;
    for (int i = 0; i < 5; i++) d->code = (d->code << 8) | dec_byte(d);
}

/* ------------------------------------------------------------------------ */
/* 2. adaptive bit model                                                     */

#define PROB_BITS 16
#define PROB_MIN 48
#define PROB_MAX (65536 - 48)

typedef struct {
    uint16_t f, s; /* P(bit = 0) in 1/65536, fast and slow estimators */
    uint16_t n;    /* uses, saturating */
} Bit;

static inline uint32_t bit_p(const Bit *b) {
    uint32_t p = ((uint32_t)b->f + b->s + 1) >> 1;
    return p < PROB_MIN ? PROB_MIN : (p > PROB_MAX ? PROB_MAX : p);
}

static inline void bit_update(Bit *b, int bit) {
    int rs = 4 + (b->n >> 5);
    if (rs > 9) rs = 9;
    if (bit) {
        b->f -= b->f >> 6;
        b->s -= b->s >> rs;
    } else {
        b->f += (65536 - b->f) >> 6;
        b->s += (65536 - b->s) >> rs;
    }
    if (b->n < 0xFFFF) b->n++;
}

static void bit_init(Bit *b, uint16_t p) {
    b->f = b->s = p;
    b->n = 0;
}

static inline void put_bit(RangeEnc *e, Bit *m, int bit) {
    uint32_t bound = (e->range >> PROB_BITS) * bit_p(m);
    if (!bit) {
        e->range = bound;
    } else {
        e->low += bound;
        e->range -= bound;
    }
    while (e->range < (1u << 24)) {
        e->range <<= 8;
        enc_shift_low(e);
    }
    bit_update(m, bit);
}

static inline int get_bit(RangeDec *d, Bit *m) {
    uint32_t bound = (d->range >> PROB_BITS) * bit_p(m);
    int bit;
    if (d->code < bound) {
        d->range = bound;
        bit = 0;
    } else {
        d->code -= bound;
        d->range -= bound;
        bit = 1;
    }
    while (d->range < (1u << 24)) {
        d->range <<= 8;
        d->code = (d->code << 8) | dec_byte(d);
    }
    bit_update(m, bit);
    return bit;
}

/* n (1..16) equiprobable bits at once, without a model ("bypass" bits). */
static inline void put_direct(RangeEnc *e, uint32_t value, int n) {
    e->range >>= n;
    e->low += (uint64_t)value * e->range;
    while (e->range < (1u << 24)) {
        e->range <<= 8;
        enc_shift_low(e);
    }
}

static inline uint32_t get_direct(RangeDec *d, int n) {
    d->range >>= n;
    uint32_t v = d->code / d->range;
    if (v >= (1u << n)) v = (1u << n) - 1; /* only a damaged stream gets here */
    d->code -= v * d->range;
    while (d->range < (1u << 24)) {
        d->range <<= 8;
        d->code = (d->code << 8) | dec_byte(d);
    }
    return v;
}

/* ------------------------------------------------------------------------ */
/* 3. integer coder with caller-chosen contexts                              */

#define EMAX 24      /* magnitudes below 2^24 */
#define NCTX 48      /* magnitude contexts */
#define NSIGN 27     /* sign contexts */

/* Flat layout of every Bit of one IntModel (the order is part of the format:
 * learned initial tables are stored in this order). */
#define OFF_ZERO 0
#define OFF_SIGN (OFF_ZERO + NCTX)
#define OFF_EXPO (OFF_SIGN + NSIGN)
#define OFF_M1 (OFF_EXPO + NCTX * EMAX)
#define OFF_M2 (OFF_M1 + NCTX * EMAX)
#define OFF_MLOW (OFF_M2 + NCTX * EMAX * 2)
#define NBITS (OFF_MLOW + EMAX * EMAX)

typedef struct {
    Bit b[NBITS];
} IntModel;

static void model_init(IntModel *m, const uint16_t *init) {
    for (int i = 0; i < NBITS; i++) bit_init(&m->b[i], init ? init[i] : 32768);
}

static inline int bitlen(uint32_t v) {
    return v ? 32 - __builtin_clz(v) : 0;
}

/* Magnitude v >= 0 under context c; sign s (0 = positive) coded under sign
 * context sc unless sign_mode says it is implied (1: only >= 0 possible,
 * 2: only <= 0 possible, 0: code it). */
static void put_int(RangeEnc *e, IntModel *m, int c, int sc, uint32_t v, int negative, int sign_mode) {
    put_bit(e, &m->b[OFF_ZERO + c], v != 0);
    if (!v) return;
    if (sign_mode == 0) put_bit(e, &m->b[OFF_SIGN + sc], negative);
    int ex = bitlen(v) - 1;
    for (int i = 0; i < ex; i++) put_bit(e, &m->b[OFF_EXPO + c * EMAX + i], 1);
    if (ex < EMAX - 1) put_bit(e, &m->b[OFF_EXPO + c * EMAX + ex], 0);
    if (ex >= 1) {
        int top = (v >> (ex - 1)) & 1;
        put_bit(e, &m->b[OFF_M1 + c * EMAX + ex], top);
        if (ex >= 2) put_bit(e, &m->b[OFF_M2 + (c * EMAX + ex) * 2 + top], (v >> (ex - 2)) & 1);
        /* the remaining low bits are close to equiprobable: bypass, in chunks of at most 16 */
        for (int j = ex - 2; j > 0;) {
            int n = j > 16 ? 16 : j;
            j -= n;
            put_direct(e, (v >> j) & ((1u << n) - 1), n);
        }
    }
}

static uint32_t get_int(RangeDec *d, IntModel *m, int c, int sc, int *negative, int sign_mode) {
    *negative = 0;
    if (!get_bit(d, &m->b[OFF_ZERO + c])) return 0;
    if (sign_mode == 0) *negative = get_bit(d, &m->b[OFF_SIGN + sc]);
    else *negative = (sign_mode == 2);
    int ex = 0;
    while (ex < EMAX - 1 && get_bit(d, &m->b[OFF_EXPO + c * EMAX + ex])) ex++;
    uint32_t v = 1;
    if (ex >= 1) {
        int top = get_bit(d, &m->b[OFF_M1 + c * EMAX + ex]);
        v = (v << 1) | (uint32_t)top;
        if (ex >= 2) v = (v << 1) | (uint32_t)get_bit(d, &m->b[OFF_M2 + (c * EMAX + ex) * 2 + top]);
        for (int j = ex - 2; j > 0;) {
            int n = j > 16 ? 16 : j;
            j -= n;
            v = (v << n) | get_direct(d, n);
        }
    }
    return v;
}

/* ------------------------------------------------------------------------ */
/* 4. the pixel coder                                                        */

#define NPRED 8       /* fixed predictors of the blend (image borders) */
#define NINT 32       /* intensity classes for the noise-level prior */
#define NLMS 11       /* inputs of the adaptive linear predictor (interior) */
#define LMS_MU 8      /* its step size, 1/1024 */
#define LMS_WMAX (1 << 20)
#define PB 3          /* predictions carry 3 fractional bits */
#define NTEX 64       /* texture patterns for bias cancellation */
#define NBIASACT 8    /* activity classes for bias cancellation */
#define BIAS_LIMIT 64 /* halve a bias context's sums at this count */

/* Activity (in 1/8 steps) -> magnitude context: two buckets per octave. */
static inline int act_bucket(uint32_t a) {
    if (a == 0) return 0;
    int L = bitlen(a);
    int b = (L == 1) ? 1 : 2 * L - 2 + (int)((a >> (L - 2)) & 1);
    return b >= NCTX ? NCTX - 1 : b;
}

static inline int32_t clampi(int32_t v, int32_t lo, int32_t hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

static inline int32_t med3(int32_t a, int32_t b, int32_t c) {
    int32_t mx = a > b ? a : b, mn = a < b ? a : b;
    return c > mx ? mx : (c < mn ? mn : c);
}

/* floor(v / 2^s) without relying on the implementation-defined right shift of negatives */
static inline int64_t floor_shift(int64_t v, int s) {
    return v >= 0 ? (v >> s) : -(((-v) + ((int64_t)1 << s) - 1) >> s);
}

/* The same for |v| < 2^61, without a branch (the pixel loop's NLMS update, which the compiler can then
 * vectorize): shift v + 2^62 >= 0 as unsigned, and take 2^(62 - s) back off. */
static inline int64_t floor_shift_small(int64_t v, int s) {
    return (int64_t)(((uint64_t)v + ((uint64_t)1 << 62)) >> s) - ((int64_t)1 << (62 - s));
}

static inline int sgn3(int32_t v) { return v > 0 ? 2 : (v < 0 ? 0 : 1); }

typedef struct {
    int h, w;
    int32_t maxval, near, step;
    IntModel *model;
    /* rows of state, 3 rows (y-2, y-1, y) of width w + 4 (2 pad each side) */
    int32_t *ef;          /* signed final error, 1/8 units */
    uint32_t *ep;         /* per-predictor abs error, NPRED per pixel */
    int32_t bias_sum[NTEX * NBIASACT];
    int32_t bias_cnt[NTEX * NBIASACT];
    int64_t lw[NLMS];
    int32_t nlev[NINT];
    int ishift;         /* intensity class = value >> ishift (NINT classes over 0..maxval) */ /* running mean |error| per intensity class, 1/8 units x 16 */ /* adaptive linear predictor weights, Q16, on neighbour - N */
} PixState;

/* Optional per-pixel trace for tests: prediction (1/8 units, after bias
 * cancellation), magnitude context, bias context, sign context. */
typedef struct {
    int32_t *pred, *ctx, *bctx, *sctx;
} Trace;

#define ROW(y) ((size_t)((y) % 3) * (size_t)(st->w + 4) + 2)

/* n / d for 0 <= n < 2^26 and 1 <= d <= 64 (a bias context's sum, |sum| <= 64 * 2^19, and count, below
 * BIAS_LIMIT) by a multiply with ceil(2^32 / d): exact over that whole range (Granlund and Montgomery 1994,
 * and checked exhaustively), and several times cheaper than a division in the pixel loop. */
static uint32_t bias_recip[BIAS_LIMIT + 1];
static void bias_recip_init(void) {
    for (uint64_t d = 1; d <= BIAS_LIMIT; d++) bias_recip[d] = (uint32_t)(((1ULL << 32) + d - 1) / d - (d == 1));
}
static inline int32_t bias_div(int32_t n, int32_t d) {
    if (d == 1) return n;
    return (int32_t)(((uint64_t)(uint32_t)n * bias_recip[d]) >> 32);
}

/* The coding loop, shared by encoder (enc != NULL, px read) and decoder
 * (dec != NULL, px written). px holds values 0..maxval; reconstructed values
 * replace originals in rec (the causal neighbourhood both sides see). */
static int code_plane(PixState *st, RangeEnc *enc, RangeDec *dec, const uint16_t *px, uint16_t *rec, Trace *tr) {
    const int h = st->h, w = st->w;
    const int32_t maxval = st->maxval, near = st->near, step = st->step;
    const int32_t maxp = maxval << PB;
    const int32_t mid = (maxval + 1) >> 1;
    for (int y = 0; y < h; y++) {
        int32_t *efr = st->ef + ROW(y), *efn = st->ef + ROW(y + 2), *efnn = st->ef + ROW(y + 1);
        uint32_t *epr = st->ep + ROW(y) * NPRED, *epn = st->ep + ROW(y + 2) * NPRED;
        const uint16_t *rn = y > 0 ? rec + (size_t)(y - 1) * w : NULL;
        const uint16_t *rnn = y > 1 ? rec + (size_t)(y - 2) * w : NULL;
        uint16_t *rr = rec + (size_t)y * w;
        for (int x = 0; x < w; x++) {
            /* neighbours (edge rule documented in native_reference.py) */
            int32_t W = x > 0 ? rr[x - 1] : (y > 0 ? rn[x] : mid);
            int32_t N = y > 0 ? rn[x] : W;
            int32_t NW = (y > 0 && x > 0) ? rn[x - 1] : N;
            int32_t NE = (y > 0 && x + 1 < w) ? rn[x + 1] : N;
            int32_t WW = x > 1 ? rr[x - 2] : W;
            int32_t NN = y > 1 ? rnn[x] : N;
            int hasN = y > 0, hasW = x > 0, hasNW = y > 0 && x > 0, hasNE = y > 0 && x + 1 < w;
            /* sub-predictions, 1/8 units, clamped to the range */
            /* the fixed predictions and their errors are needed on the borders and next to them only */
            int need_ep = y < 2 || x <= 2 || x + 3 >= w;
            int32_t p[NPRED] = {0};
            if (need_ep) {
            p[0] = N << PB;
            p[1] = W << PB;
            p[2] = clampi((W + NE - N) * 8, 0, maxp);
            p[3] = med3(W, N, W + N - NW) << PB;
            p[4] = (N + W) << (PB - 1);
            p[5] = (W + NE) << (PB - 1);
            p[6] = clampi(N * 8 + (W - NW) * 4, 0, maxp);
            p[7] = clampi(W * 8 + (N - NW) * 4, 0, maxp);
            }
            /* interior pixels: an adaptive linear predictor (normalized LMS) on the 11 other pixels of
             * the causal 5 x 3 window, relative to N; border pixels: the blend of the 8 fixed ones */
            int lms_on = y >= 2 && x >= 2 && x + 2 < w;
            int32_t ld[NLMS] = {0};
            int64_t lsum = 0, lnorm = 0;
            if (lms_on) {
                ld[0] = W - N; ld[1] = NW - N; ld[2] = NE - N; ld[3] = WW - N; ld[4] = NN - N;
                ld[5] = (int32_t)rn[x - 2] - N; ld[6] = (int32_t)rn[x + 2] - N;
                ld[7] = (int32_t)rnn[x - 1] - N; ld[8] = (int32_t)rnn[x + 1] - N;
                ld[9] = (int32_t)rnn[x - 2] - N; ld[10] = (int32_t)rnn[x + 2] - N;
                for (int j = 0; j < NLMS; j++) {
                    lsum += st->lw[j] * ld[j];
                    lnorm += (int64_t)ld[j] * ld[j];
                }
            }
            int32_t P;
            if (lms_on) {
                int64_t v = (int64_t)N * 8 + floor_shift_small(lsum, 16 - PB); /* |lsum| < 11 * 2^20 * 2^16 */
                P = (int32_t)(v < 0 ? 0 : (v > maxp ? maxp : v));
            } else {
            /* blend weights from each predictor's local errors */
            uint32_t E[NPRED], emin = 0xFFFFFFFFu;
            for (int i = 0; i < NPRED; i++) {
                uint32_t s = 0;
                if (hasN) s += 2 * epn[x * NPRED + i];
                if (hasW) s += 2 * epr[(x - 1) * NPRED + i];
                if (hasNW) s += epn[(x - 1) * NPRED + i];
                if (hasNE) s += epn[(x + 1) * NPRED + i];
                E[i] = s;
                if (s < emin) emin = s;
            }
            int64_t num = 0, den = 0;
            for (int i = 0; i < NPRED; i++) {
                /* w = (emin+1)/(E+1) in 1/65536, then squared */
                uint64_t r = ((uint64_t)(emin + 1) << 16) / ((uint64_t)E[i] + 1);
                uint64_t wi = (r * r) >> 16;
                num += (int64_t)wi * p[i];
                den += (int64_t)wi;
            }
            P = (int32_t)((num + den / 2) / den); /* den >= 65536 (the best predictor) */
            }
            /* context features */
            int32_t eW = hasW ? efr[x - 1] : 0, eN = hasN ? efn[x] : 0;
            int32_t eNW = hasNW ? efn[x - 1] : 0, eNE = hasNE ? efn[x + 1] : 0;
            int32_t eWW = x > 1 ? efr[x - 2] : 0, eNN = y > 1 ? efnn[x] : 0;
            uint32_t aerr = 2u * (uint32_t)abs(eN) + 2u * (uint32_t)abs(eW) + (uint32_t)abs(eNW) + (uint32_t)abs(eNE) +
                            (uint32_t)abs(eWW) + (uint32_t)abs(eNN);
            if (y > 0) {
                if (x > 1) aerr += (uint32_t)abs(efn[x - 2]);
                if (x + 2 < w) aerr += (uint32_t)abs(efn[x + 2]);
            }
            if (y > 1) {
                if (x > 0) aerr += (uint32_t)abs(efnn[x - 1]);
                if (x + 1 < w) aerr += (uint32_t)abs(efnn[x + 1]);
            }
            uint32_t grad = (uint32_t)(abs(W - NW) + abs(N - NW) + abs(NE - N)) << PB;
            int ib = ((P + (1 << (PB - 1))) >> PB) >> st->ishift;
            uint32_t act = aerr + grad + (uint32_t)(st->nlev[ib] >> 1);
            if (step > 1) act /= (uint32_t)step;
            int ctx = act_bucket(act);
            int tex = ((N << PB) > P) | (((W << PB) > P) << 1) | (((NW << PB) > P) << 2) | (((NE << PB) > P) << 3) |
                      (((NN << PB) > P) << 4) | (((WW << PB) > P) << 5);
            int ba = ctx >> 2;
            if (ba >= NBIASACT) ba = NBIASACT - 1;
            int bctx = tex * NBIASACT + ba;
            int32_t cnt = st->bias_cnt[bctx], sum = st->bias_sum[bctx];
            int32_t corr = 0;
            if (cnt > 0) corr = sum >= 0 ? bias_div(sum + cnt / 2, cnt) : -bias_div(-sum + cnt / 2, cnt);
            int32_t Pc = clampi(P + corr, 0, maxp);
            int32_t pred = (Pc + (1 << (PB - 1))) >> PB;
            int sctx = sgn3(eW) * 9 + sgn3(eN) * 3 + sgn3(eNW);
            /* residual, quantized against the prediction */
            int32_t qmin = step == 1 ? -pred : -((pred + near) / step);
            int32_t qmax = step == 1 ? maxval - pred : (maxval - pred + near) / step;
            int sign_mode = qmin == 0 ? 1 : (qmax == 0 ? 2 : 0);
            int32_t q;
            if (enc) {
                int32_t e = (int32_t)px[(size_t)y * w + x] - pred;
                q = step == 1 ? e : (e >= 0 ? (e + near) / step : -((-e + near) / step));
                put_int(enc, st->model, ctx, sctx, (uint32_t)abs(q), q < 0, sign_mode);
            } else {
                int neg;
                uint32_t v = get_int(dec, st->model, ctx, sctx, &neg, sign_mode);
                uint32_t vmax = (uint32_t)(maxval / step) + 1;
                if (v > vmax) v = vmax; /* a damaged stream: keep q * step far from overflow */
                q = neg ? -(int32_t)v : (int32_t)v;
            }
            int32_t r = clampi(pred + q * step, 0, maxval);
            rr[x] = (uint16_t)r;
            /* state updates */
            int32_t rs = r << PB;
            efr[x] = rs - Pc;
            if (need_ep)
                for (int i = 0; i < NPRED; i++) epr[x * NPRED + i] = (uint32_t)abs(rs - p[i]);
            if (lms_on) {
                int64_t err8 = (int64_t)rs - ((int64_t)N * 8 + floor_shift_small(lsum, 16 - PB));
                if (err8 > (1 << 20)) err8 = 1 << 20;
                if (err8 < -(1 << 20)) err8 = -(1 << 20);
                int64_t g = (err8 * LMS_MU * (1 << 19)) / (lnorm + 16);
                for (int j = 0; j < NLMS; j++) {
                    int64_t nw = st->lw[j] + floor_shift_small(g * ld[j], 16); /* |g| < 2^38, |ld| < 2^16 */
                    st->lw[j] = nw > LMS_WMAX ? LMS_WMAX : (nw < -LMS_WMAX ? -LMS_WMAX : nw);
                }
            }
            st->nlev[ib] += (int32_t)abs(efr[x]) - (st->nlev[ib] >> 4);
            sum += rs - P;
            cnt++;
            if (cnt >= BIAS_LIMIT) {
                sum = sum >= 0 ? sum / 2 : -((-sum) / 2);
                cnt /= 2;
            }
            st->bias_sum[bctx] = sum;
            st->bias_cnt[bctx] = cnt;
            if (tr) {
                size_t k = (size_t)y * w + x;
                tr->pred[k] = Pc;
                tr->ctx[k] = ctx;
                tr->bctx[k] = bctx;
                tr->sctx[k] = sctx;
            }
        }
        if (enc && enc->oom) return -1;
    }
    return 0;
}

static int pix_init(PixState *st, int h, int w, int32_t maxval, int32_t near, IntModel *m) {
    memset(st, 0, sizeof(*st));
    st->h = h;
    st->w = w;
    st->maxval = maxval;
    st->near = near;
    st->step = 2 * near + 1;
    st->model = m;
    st->lw[0] = 1 << 15; /* start at (N + W) / 2 */
    st->ishift = bitlen((uint32_t)maxval) > 5 ? bitlen((uint32_t)maxval) - 5 : 0;
    size_t row = (size_t)w + 4;
    st->ef = (int32_t *)calloc(3 * row, sizeof(int32_t));
    st->ep = (uint32_t *)calloc(3 * row * NPRED, sizeof(uint32_t));
    if (!st->ef || !st->ep) {
        free(st->ef);
        free(st->ep);
        return -1;
    }
    return 0;
}

static void pix_free(PixState *st) {
    free(st->ef);
    free(st->ep);
}

/* ------------------------------------------------------------------------ */
/* Python bindings (buffer protocol only: no numpy C API)                    */

#define MAX_PIXELS (1LL << 26)

static int parse_geometry(int h, int w, long maxval, long near) {
    if (h < 1 || w < 1 || h > 65536 || w > 65536 || (long long)h * w > MAX_PIXELS) {
        PyErr_SetString(PyExc_ValueError, "image size outside what the engine supports");
        return -1;
    }
    if (maxval < 0 || maxval > 65535) {
        PyErr_SetString(PyExc_ValueError, "maxval must be 0..65535");
        return -1;
    }
    if (near < 0 || near > 65535) {
        PyErr_SetString(PyExc_ValueError, "near must be 0..65535");
        return -1;
    }
    return 0;
}

static int load_init(Py_buffer *ib, const uint16_t **init) {
    *init = NULL;
    if (!ib->buf || ib->len == 0) return 0;
    if (ib->len != (Py_ssize_t)(NBITS * sizeof(uint16_t))) {
        PyErr_Format(PyExc_ValueError, "initial table must hold %d uint16 values", NBITS);
        return -1;
    }
    const uint16_t *t = (const uint16_t *)ib->buf;
    for (int i = 0; i < NBITS; i++) {
        if (t[i] < PROB_MIN || t[i] > PROB_MAX) {
            PyErr_SetString(PyExc_ValueError, "initial table holds a probability outside the coder's range");
            return -1;
        }
    }
    *init = t;
    return 0;
}

/* encode(pixels: bytes-like uint16 (h*w), h, w, maxval, near, init: bytes-like (may be empty),
 *        want_state: bool) -> bytes or (bytes, bytes of final probabilities, bytes of use counts) */
static PyObject *py_encode(PyObject *self, PyObject *args) {
    Py_buffer pb, ib;
    int h, w, want_state = 0, want_recon = 0;
    long maxval, near;
    if (!PyArg_ParseTuple(args, "y*iilly*|pp", &pb, &h, &w, &maxval, &near, &ib, &want_state, &want_recon)) return NULL;
    PyObject *result = NULL;
    IntModel *m = NULL;
    uint16_t *rec = NULL;
    PixState st;
    int st_ok = 0;
    RangeEnc enc;
    enc_init(&enc);
    const uint16_t *init;
    if (parse_geometry(h, w, maxval, near) < 0 || load_init(&ib, &init) < 0) goto done;
    if (pb.len != (Py_ssize_t)h * w * 2) {
        PyErr_SetString(PyExc_ValueError, "pixel buffer size does not match h*w uint16");
        goto done;
    }
    const uint16_t *px = (const uint16_t *)pb.buf;
    for (Py_ssize_t i = 0; i < (Py_ssize_t)h * w; i++) {
        if (px[i] > maxval) {
            PyErr_SetString(PyExc_ValueError, "pixel value above maxval");
            goto done;
        }
    }
    m = (IntModel *)malloc(sizeof(IntModel));
    rec = (uint16_t *)malloc((size_t)h * w * sizeof(uint16_t));
    if (!m || !rec || pix_init(&st, h, w, (int32_t)maxval, (int32_t)near, m) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    st_ok = 1;
    model_init(m, init);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = code_plane(&st, &enc, NULL, px, rec, NULL);
    if (rc == 0) enc_flush(&enc);
    Py_END_ALLOW_THREADS
    if (rc < 0 || enc.oom) {
        PyErr_NoMemory();
        goto done;
    }
    PyObject *data = PyBytes_FromStringAndSize((const char *)enc.buf, (Py_ssize_t)enc.len);
    if (data && want_recon) {
        result = Py_BuildValue("(Ny#)", data, (const char *)rec, (Py_ssize_t)h * w * 2);
        goto done;
    }
    if (!data || !want_state) {
        result = data;
        goto done;
    }
    uint16_t *probs = (uint16_t *)malloc(NBITS * 2 * sizeof(uint16_t));
    if (!probs) {
        Py_DECREF(data);
        PyErr_NoMemory();
        goto done;
    }
    for (int i = 0; i < NBITS; i++) {
        probs[i] = (uint16_t)bit_p(&m->b[i]);
        probs[NBITS + i] = m->b[i].n;
    }
    result = Py_BuildValue("(Ny#y#)", data, (const char *)probs, (Py_ssize_t)(NBITS * 2),
                           (const char *)(probs + NBITS), (Py_ssize_t)(NBITS * 2));
    free(probs);
done:
    if (st_ok) pix_free(&st);
    free(m);
    free(rec);
    free(enc.buf);
    PyBuffer_Release(&pb);
    PyBuffer_Release(&ib);
    return result;
}

/* decode(payload, h, w, maxval, near, init) -> bytes (uint16 h*w). Raises
 * ValueError if the stream ends before the image does. */
static PyObject *py_decode(PyObject *self, PyObject *args) {
    Py_buffer db, ib;
    int h, w;
    long maxval, near;
    if (!PyArg_ParseTuple(args, "y*iilly*", &db, &h, &w, &maxval, &near, &ib)) return NULL;
    PyObject *result = NULL;
    IntModel *m = NULL;
    PixState st;
    int st_ok = 0;
    const uint16_t *init;
    if (parse_geometry(h, w, maxval, near) < 0 || load_init(&ib, &init) < 0) goto done;
    m = (IntModel *)malloc(sizeof(IntModel));
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)h * w * 2);
    if (!out) goto done;
    if (!m || pix_init(&st, h, w, (int32_t)maxval, (int32_t)near, m) < 0) {
        Py_DECREF(out);
        PyErr_NoMemory();
        goto done;
    }
    st_ok = 1;
    model_init(m, init);
    RangeDec dec;
    dec_init(&dec, (const uint8_t *)db.buf, (size_t)db.len);
    uint16_t *rec = (uint16_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    code_plane(&st, NULL, &dec, NULL, rec, NULL);
    Py_END_ALLOW_THREADS
    /* The encoder's flush writes 5 bytes after the last symbol's; the decoder
     * primes 5 bytes ahead, so a whole stream is consumed exactly. */
    if (dec.overrun > 0 || dec.pos != dec.len) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_ValueError, dec.overrun ? "pixel stream ends before the image" : "pixel stream has bytes after the image");
        goto done;
    }
    result = out;
done:
    if (st_ok) pix_free(&st);
    free(m);
    PyBuffer_Release(&db);
    PyBuffer_Release(&ib);
    return result;
}

/* trace(pixels, h, w, maxval, near) -> (pred, ctx, bctx, sctx) as bytes of int32:
 * the encoder's per-pixel prediction (1/8 units) and contexts, for tests. */
static PyObject *py_trace(PyObject *self, PyObject *args) {
    Py_buffer pb;
    int h, w;
    long maxval, near;
    if (!PyArg_ParseTuple(args, "y*iill", &pb, &h, &w, &maxval, &near)) return NULL;
    PyObject *result = NULL;
    IntModel *m = NULL;
    uint16_t *rec = NULL;
    int32_t *buf = NULL;
    PixState st;
    int st_ok = 0;
    RangeEnc enc;
    enc_init(&enc);
    if (parse_geometry(h, w, maxval, near) < 0) goto done;
    if (pb.len != (Py_ssize_t)h * w * 2) {
        PyErr_SetString(PyExc_ValueError, "pixel buffer size does not match h*w uint16");
        goto done;
    }
    const uint16_t *px = (const uint16_t *)pb.buf;
    for (Py_ssize_t i = 0; i < (Py_ssize_t)h * w; i++) {
        if (px[i] > maxval) {
            PyErr_SetString(PyExc_ValueError, "pixel value above maxval");
            goto done;
        }
    }
    size_t n = (size_t)h * w;
    m = (IntModel *)malloc(sizeof(IntModel));
    rec = (uint16_t *)malloc(n * sizeof(uint16_t));
    buf = (int32_t *)malloc(4 * n * sizeof(int32_t));
    if (!m || !rec || !buf || pix_init(&st, h, w, (int32_t)maxval, (int32_t)near, m) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    st_ok = 1;
    model_init(m, NULL);
    Trace tr = {buf, buf + n, buf + 2 * n, buf + 3 * n};
    if (code_plane(&st, &enc, NULL, px, rec, &tr) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = Py_BuildValue("(y#y#y#y#)", (const char *)tr.pred, (Py_ssize_t)(n * 4), (const char *)tr.ctx,
                           (Py_ssize_t)(n * 4), (const char *)tr.bctx, (Py_ssize_t)(n * 4), (const char *)tr.sctx,
                           (Py_ssize_t)(n * 4));
done:
    if (st_ok) pix_free(&st);
    free(m);
    free(rec);
    free(buf);
    free(enc.buf);
    PyBuffer_Release(&pb);
    return result;
}

/* Generic integer coding, for callers with their own contexts (tests and
 * future coefficient coders): code_ints(values int32, ctx int32, sctx int32, init)
 * -> bytes; decode_ints(payload, ctx, sctx, init) -> bytes of int32. Contexts
 * must be known to the decoder in advance here; sequential callers use the C
 * API (put_int/get_int) with contexts computed from decoded values. */
static int check_ctx(const int32_t *c, const int32_t *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (c[i] < 0 || c[i] >= NCTX || s[i] < 0 || s[i] >= NSIGN) {
            PyErr_SetString(PyExc_ValueError, "context index out of range");
            return -1;
        }
    }
    return 0;
}

static PyObject *py_code_ints(PyObject *self, PyObject *args) {
    Py_buffer vb, cb, sb, ib;
    if (!PyArg_ParseTuple(args, "y*y*y*y*", &vb, &cb, &sb, &ib)) return NULL;
    PyObject *result = NULL;
    IntModel *m = NULL;
    RangeEnc enc;
    enc_init(&enc);
    const uint16_t *init;
    Py_ssize_t n = vb.len / 4;
    if (vb.len % 4 || cb.len != vb.len || sb.len != vb.len) {
        PyErr_SetString(PyExc_ValueError, "values, contexts and sign contexts must be int32 of one length");
        goto done;
    }
    if (load_init(&ib, &init) < 0 || check_ctx((const int32_t *)cb.buf, (const int32_t *)sb.buf, n) < 0) goto done;
    const int32_t *v = (const int32_t *)vb.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (v[i] <= -(1 << EMAX) || v[i] >= (1 << EMAX)) {
            PyErr_SetString(PyExc_ValueError, "value outside +-2^24");
            goto done;
        }
    }
    m = (IntModel *)malloc(sizeof(IntModel));
    if (!m) {
        PyErr_NoMemory();
        goto done;
    }
    model_init(m, init);
    const int32_t *c = (const int32_t *)cb.buf, *s = (const int32_t *)sb.buf;
    for (Py_ssize_t i = 0; i < n; i++) put_int(&enc, m, c[i], s[i], (uint32_t)abs(v[i]), v[i] < 0, 0);
    enc_flush(&enc);
    if (enc.oom) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyBytes_FromStringAndSize((const char *)enc.buf, (Py_ssize_t)enc.len);
done:
    free(m);
    free(enc.buf);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&cb);
    PyBuffer_Release(&sb);
    PyBuffer_Release(&ib);
    return result;
}

static PyObject *py_decode_ints(PyObject *self, PyObject *args) {
    Py_buffer db, cb, sb, ib;
    if (!PyArg_ParseTuple(args, "y*y*y*y*", &db, &cb, &sb, &ib)) return NULL;
    PyObject *result = NULL;
    IntModel *m = NULL;
    const uint16_t *init;
    Py_ssize_t n = cb.len / 4;
    if (cb.len % 4 || sb.len != cb.len) {
        PyErr_SetString(PyExc_ValueError, "contexts and sign contexts must be int32 of one length");
        goto done;
    }
    if (load_init(&ib, &init) < 0 || check_ctx((const int32_t *)cb.buf, (const int32_t *)sb.buf, n) < 0) goto done;
    m = (IntModel *)malloc(sizeof(IntModel));
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * 4);
    if (!out || !m) {
        Py_XDECREF(out);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }
    model_init(m, init);
    RangeDec dec;
    dec_init(&dec, (const uint8_t *)db.buf, (size_t)db.len);
    int32_t *o = (int32_t *)PyBytes_AS_STRING(out);
    const int32_t *c = (const int32_t *)cb.buf, *s = (const int32_t *)sb.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        int neg;
        uint32_t v = get_int(&dec, m, c[i], s[i], &neg, 0);
        o[i] = neg ? -(int32_t)v : (int32_t)v;
    }
    if (dec.overrun > 0 || dec.pos != dec.len) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_ValueError, "integer stream length does not match its contents");
        goto done;
    }
    result = out;
done:
    free(m);
    PyBuffer_Release(&db);
    PyBuffer_Release(&cb);
    PyBuffer_Release(&sb);
    PyBuffer_Release(&ib);
    return result;
}

/* ------------------------------------------------------------------------ */
/* 4b. native coder: detail bands of the reversible 5/3 front end            */
/*
 * For lossless streams whose stored values went through a JPEG 2000-style
 * reversible 5/3 wavelet with truncated bit planes before they reached us
 * (a decoded lossy JPEG 2000 image), the encoder may transform the image with
 * the same integer 5/3 (numpy, native.py), code the low-pass band with the
 * pixel coder above and the detail bands here. A coefficient v at (y, x) of a
 * band is coded without prediction: the magnitude m = |v| as hi = m >> 2
 * (integer coder, context from the magnitudes of six causal neighbours in the
 * band) and the two low bits lo = m & 3 under a context of the low bits of W
 * and N (truncated bit planes leave them far from uniform), then the sign.
 * The rule is restated in native_reference.band_contexts.
 */

#define BLCTX 32 /* low-bit contexts: (|W| & 3) * 4 + (|N| & 3), + 16 where hi == 0 */

typedef struct {
    IntModel im;
    Bit lo[BLCTX * 3];
} BandModel;

static void band_model_init(BandModel *bm) {
    model_init(&bm->im, NULL);
    for (int i = 0; i < BLCTX * 3; i++) bit_init(&bm->lo[i], 32768);
}

static inline int32_t band_at(const int32_t *v, int32_t h, int32_t w, int32_t y, int32_t x) {
    return (y >= 0 && x >= 0 && y < h && x < w) ? v[(size_t)y * w + x] : 0;
}

static inline uint32_t uabs32(int32_t v) { return v < 0 ? (uint32_t)0 - (uint32_t)v : (uint32_t)v; }

/* One band, raster order: encoder (enc) reads v, decoder (dec) writes it.
 * ctx/sctx/lctx receive the contexts when a trace is asked for. */
static void band_code(BandModel *bm, RangeEnc *enc, RangeDec *dec, int32_t *v, int32_t h, int32_t w,
                      int32_t *tc, int32_t *ts, int32_t *tl) {
    for (int32_t y = 0; y < h; y++) {
        for (int32_t x = 0; x < w; x++) {
            int32_t N = band_at(v, h, w, y - 1, x), W = band_at(v, h, w, y, x - 1);
            int32_t NW = band_at(v, h, w, y - 1, x - 1), NE = band_at(v, h, w, y - 1, x + 1);
            int32_t WW = band_at(v, h, w, y, x - 2), NN = band_at(v, h, w, y - 2, x);
            uint32_t act = 2 * uabs32(N) + 2 * uabs32(W) + uabs32(NW) + uabs32(NE) + uabs32(WW) + uabs32(NN);
            int ctx = act_bucket(act);
            int sctx = sgn3(W) * 9 + sgn3(N) * 3 + sgn3(NW);
            int lbase = (int)(uabs32(W) & 3) * 4 + (int)(uabs32(N) & 3);
            size_t k = (size_t)y * w + x;
            uint32_t hi, lo;
            int neg;
            if (enc) {
                uint32_t m = uabs32(v[k]);
                hi = m >> 2;
                lo = m & 3;
                neg = v[k] < 0;
                put_int(enc, &bm->im, ctx, 0, hi, 0, 1);
                int lctx = lbase + (hi == 0 ? 16 : 0);
                put_bit(enc, &bm->lo[lctx * 3], (lo >> 1) & 1);
                put_bit(enc, &bm->lo[lctx * 3 + 1 + ((lo >> 1) & 1)], lo & 1);
                if (hi | lo) put_bit(enc, &bm->im.b[OFF_SIGN + sctx], neg);
            } else {
                int dummy;
                hi = get_int(dec, &bm->im, ctx, 0, &dummy, 1);
                int lctx = lbase + (hi == 0 ? 16 : 0);
                uint32_t b1 = (uint32_t)get_bit(dec, &bm->lo[lctx * 3]);
                lo = (b1 << 1) | (uint32_t)get_bit(dec, &bm->lo[lctx * 3 + 1 + b1]);
                neg = (hi | lo) ? get_bit(dec, &bm->im.b[OFF_SIGN + sctx]) : 0;
                int32_t m = (int32_t)((hi << 2) | lo); /* hi < 2^24: no overflow */
                v[k] = neg ? -m : m;
            }
            if (tc) {
                tc[k] = ctx;
                ts[k] = sctx;
                tl[k] = lbase + (hi == 0 ? 16 : 0);
            }
        }
    }
}

/* Band geometry: shapes int32 (h0, w0, h1, w1, ...); returns total coefficients or -1. */
static Py_ssize_t band_geom(Py_buffer *sb) {
    if (sb->len % 8 || sb->len == 0) {
        PyErr_SetString(PyExc_ValueError, "band shapes must be int32 pairs");
        return -1;
    }
    const int32_t *s = (const int32_t *)sb->buf;
    long long total = 0;
    for (Py_ssize_t i = 0; i < sb->len / 4; i += 2) {
        if (s[i] < 0 || s[i + 1] < 0 || s[i] > 65536 || s[i + 1] > 65536) {
            PyErr_SetString(PyExc_ValueError, "band shape outside what the engine supports");
            return -1;
        }
        total += (long long)s[i] * s[i + 1];
    }
    if (total > MAX_PIXELS) {
        PyErr_SetString(PyExc_ValueError, "bands larger than the engine supports");
        return -1;
    }
    return (Py_ssize_t)total;
}

/* band_encode(values int32, shapes int32) -> bytes; band_trace(values, shapes) -> (ctx, sctx, lctx) int32 bytes */
static PyObject *band_encode_or_trace(PyObject *args, int trace) {
    Py_buffer vb, sb;
    if (!PyArg_ParseTuple(args, "y*y*", &vb, &sb)) return NULL;
    PyObject *result = NULL;
    BandModel *bm = NULL;
    int32_t *v = NULL, *tr = NULL;
    RangeEnc enc;
    enc_init(&enc);
    Py_ssize_t total = band_geom(&sb);
    if (total < 0) goto done;
    if (vb.len != total * 4) {
        PyErr_SetString(PyExc_ValueError, "band values do not match the shapes");
        goto done;
    }
    const int32_t *src = (const int32_t *)vb.buf;
    for (Py_ssize_t i = 0; i < total; i++) {
        if (src[i] <= -(1 << (EMAX + 2)) || src[i] >= (1 << (EMAX + 2))) {
            PyErr_SetString(PyExc_ValueError, "band value outside +-2^26");
            goto done;
        }
    }
    bm = (BandModel *)malloc(sizeof(BandModel));
    v = (int32_t *)malloc((size_t)(total ? total : 1) * 4);
    if (trace) tr = (int32_t *)malloc((size_t)(total ? total : 1) * 12);
    if (!bm || !v || (trace && !tr)) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(v, src, (size_t)total * 4);
    band_model_init(bm);
    const int32_t *s = (const int32_t *)sb.buf;
    Py_ssize_t off = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < sb.len / 4; i += 2) {
        band_code(bm, &enc, NULL, v + off, s[i], s[i + 1], tr ? tr + off : NULL, tr ? tr + total + off : NULL,
                  tr ? tr + 2 * total + off : NULL);
        off += (Py_ssize_t)s[i] * s[i + 1];
    }
    enc_flush(&enc);
    Py_END_ALLOW_THREADS
    if (enc.oom) {
        PyErr_NoMemory();
        goto done;
    }
    if (trace)
        result = Py_BuildValue("(y#y#y#)", (const char *)tr, total * 4, (const char *)(tr + total), total * 4,
                               (const char *)(tr + 2 * total), total * 4);
    else
        result = PyBytes_FromStringAndSize((const char *)enc.buf, (Py_ssize_t)enc.len);
done:
    free(bm);
    free(v);
    free(tr);
    free(enc.buf);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&sb);
    return result;
}

static PyObject *py_band_encode(PyObject *self, PyObject *args) { return band_encode_or_trace(args, 0); }
static PyObject *py_band_trace(PyObject *self, PyObject *args) { return band_encode_or_trace(args, 1); }

/* band_decode(payload, shapes int32) -> bytes of int32; ValueError if the stream does not end with the bands. */
static PyObject *py_band_decode(PyObject *self, PyObject *args) {
    Py_buffer db, sb;
    if (!PyArg_ParseTuple(args, "y*y*", &db, &sb)) return NULL;
    PyObject *result = NULL;
    BandModel *bm = NULL;
    Py_ssize_t total = band_geom(&sb);
    if (total < 0) goto done;
    bm = (BandModel *)malloc(sizeof(BandModel));
    PyObject *out = PyBytes_FromStringAndSize(NULL, total * 4);
    if (!out || !bm) {
        Py_XDECREF(out);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }
    band_model_init(bm);
    RangeDec dec;
    dec_init(&dec, (const uint8_t *)db.buf, (size_t)db.len);
    int32_t *v = (int32_t *)PyBytes_AS_STRING(out);
    const int32_t *s = (const int32_t *)sb.buf;
    Py_ssize_t off = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < sb.len / 4; i += 2) {
        band_code(bm, NULL, &dec, v + off, s[i], s[i + 1], NULL, NULL, NULL);
        off += (Py_ssize_t)s[i] * s[i + 1];
    }
    Py_END_ALLOW_THREADS
    if (dec.overrun > 0 || dec.pos != dec.len) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_ValueError, dec.overrun ? "band stream ends before the bands" : "band stream has bytes after the bands");
        goto done;
    }
    result = out;
done:
    free(bm);
    PyBuffer_Release(&db);
    PyBuffer_Release(&sb);
    return result;
}

/* ------------------------------------------------------------------------ */
/* 5. the sequential wavelet-coefficient coder (rsc3)                         */
/*
 * Bands arrive concatenated in coding order: the low-pass band, then per
 * level from coarsest to finest hl, lh, hh, each row-major. Every detail
 * coefficient is coded in raster order within its band with put_int under
 *   magnitude context = 16 * k + min(15, act_bucket(t)), where
 *     own = 2|N| + 2|W| + |NW| + |NE| + |NN| + |WW|   (decoded, same band)
 *     ps  = 2|parent| + |siblings already coded at this position|
 *     t   = own + ps,  k = 0 if own == 0, 1 if own > 0 and ps == 0, else 2;
 *   sign context = 9 sgn3(N) + 3 sgn3(W) + sgn3(parent)  (sgn3: -,0,+ -> 0,1,2).
 * Models: 0 for the low-pass band (MED-predicted residuals), then one per
 * (level from finest, capped at 3) x (hl/lh or hh): 9 IntModels, all
 * starting at p = 1/2 and adapting. The reference rule is in
 * radseal/codec/seq_reference.py.
 * The payload's format byte reaches the engine as `fmt`: format 0 is the
 * model above; format 1 adds the adaptive probability map (below) on the
 * significance and "magnitude > 1" bits. The encoder's rate-distortion
 * choice (no effect on the parse) may zero a +-1 and, given keep2, lower a
 * magnitude >= 2 by one.
 */
#define SEQ_MAXBANDS 64
#define SEQ_TRACE 6 /* traced values per coefficient: ctx, sign ctx, significance ctx 1 and 2, mixer set, APM set */
#define SEQ_NMODELS 9
#define SEQ_ZOWN 10                  /* own-activity classes of the significance context */
#define SEQ_NBRIGHT 1               /* brightness classes (from the low-pass band) */
#define SEQ_NZ (SEQ_ZOWN * 9 * SEQ_NBRIGHT + 4 * 5 * 4 + NCTX) /* significance contexts per model (three views) */
#define SEQ_G1 (SEQ_NZ)                 /* "magnitude > 1" bits: NCTX by combined activity, then 80 by the second view */
#define SEQ_NZALL (SEQ_NZ + NCTX + 4 * 5 * 4 + SEQ_ZOWN * 9 * SEQ_NBRIGHT)

typedef struct {
    int nb, nlev;
    int32_t h[SEQ_MAXBANDS], w[SEQ_MAXBANDS];
    size_t off[SEQ_MAXBANDS];
    size_t total;
    int32_t ll_min, ll_max; /* range of the decoded low-pass band (brightness classes) */
} SeqGeom;

static int seq_geom(SeqGeom *g, const int32_t *shapes, Py_ssize_t nshape) {
    if (nshape % 2 || nshape < 2 || nshape / 2 > SEQ_MAXBANDS || (nshape / 2 - 1) % 3) {
        PyErr_SetString(PyExc_ValueError, "band shapes must be 1 + 3 * levels pairs");
        return -1;
    }
    g->nb = (int)(nshape / 2);
    g->nlev = (g->nb - 1) / 3;
    size_t off = 0;
    for (int b = 0; b < g->nb; b++) {
        int32_t h = shapes[2 * b], w = shapes[2 * b + 1];
        if (h < 0 || w < 0 || h > 65536 || w > 65536) {
            PyErr_SetString(PyExc_ValueError, "band shape out of range");
            return -1;
        }
        g->h[b] = h;
        g->w[b] = w;
        g->off[b] = off;
        off += (size_t)h * w;
        if (off > (size_t)MAX_PIXELS) {
            PyErr_SetString(PyExc_ValueError, "bands hold more coefficients than the engine supports");
            return -1;
        }
    }
    g->total = off;
    return 0;
}

static inline int32_t seq_at(const int32_t *band, int32_t h, int32_t w, int32_t y, int32_t x) {
    if (h == 0 || w == 0) return 0;
    if (y >= h) y = h - 1;
    if (x >= w) x = w - 1;
    return band[(size_t)y * w + x];
}

/* Context of coefficient (y, x) of detail band b, from the decoded values in v. */
#define SEQ_NZ2 (4 * 5 * 4)
static inline void seq_ctx(const SeqGeom *g, const int32_t *v, int b, int32_t y, int32_t x, int *ctx, int *sctx, int *zctx, int *zctx2, int *zmix) {
    const int32_t w = g->w[b];
    const int32_t *B = v + g->off[b];
    const int lev = (b - 1) / 3, o = (b - 1) % 3;
    int32_t N = y > 0 ? B[(size_t)(y - 1) * w + x] : 0;
    int32_t W = x > 0 ? B[(size_t)y * w + x - 1] : 0;
    int32_t NW = (y > 0 && x > 0) ? B[(size_t)(y - 1) * w + x - 1] : 0;
    int32_t NE = (y > 0 && x + 1 < w) ? B[(size_t)(y - 1) * w + x + 1] : 0;
    int32_t NN = y > 1 ? B[(size_t)(y - 2) * w + x] : 0;
    int32_t WW = x > 1 ? B[(size_t)y * w + x - 2] : 0;
    uint32_t own = 2u * (uint32_t)abs(N) + 2u * (uint32_t)abs(W) + (uint32_t)abs(NW) + (uint32_t)abs(NE) + (uint32_t)abs(NN) +
                   (uint32_t)abs(WW);
    int32_t P = 0;
    uint32_t ps = 0, sib = 0;
    if (lev > 0) {
        int pb = b - 3;
        P = seq_at(v + g->off[pb], g->h[pb], g->w[pb], y >> 1, x >> 1);
        ps += 2u * (uint32_t)abs(P);
    }
    for (int s = 0; s < o; s++) {
        int sb = b - o + s;
        sib += (uint32_t)abs(seq_at(v + g->off[sb], g->h[sb], g->w[sb], y, x));
    }
    if (sib > (1u << 28)) sib = 1u << 28;
    ps += sib;
    {
        int ab = act_bucket(own > (1u << 30) ? (1u << 30) : own);
        if (ab > SEQ_ZOWN - 1) ab = SEQ_ZOWN - 1;
        int pz = P == 0 ? 0 : ((P == 1 || P == -1) ? 1 : 2);
        int sz = sib == 0 ? 0 : (sib == 1 ? 1 : 2);
        /* brightness: the low-pass value over this position, in SEQ_NBRIGHT classes of the band's range */
        int32_t L = seq_at(v + g->off[0], g->h[0], g->w[0], y >> lev, x >> lev);
        int br = (int)(((int64_t)L - g->ll_min) * SEQ_NBRIGHT / ((int64_t)g->ll_max - g->ll_min + 1));
        if (br < 0) br = 0;
        if (br >= SEQ_NBRIGHT) br = SEQ_NBRIGHT - 1;
        *zctx = ((br * SEQ_ZOWN + ab) * 3 + pz) * 3 + sz;
        /* second view: the nearest two, the farther four, and the parent's magnitude, coarsely */
        uint32_t nw = (uint32_t)abs(N) + (uint32_t)abs(W);
        int c1 = nw == 0 ? 0 : (nw == 1 ? 1 : (nw <= 3 ? 2 : 3));
        int c2 = (NW != 0) + (NE != 0) + (NN != 0) + (WW != 0);
        /* the parent's 3 x 3 neighbourhood (the siblings' values on the coarsest level) */
        uint32_t pn = 0;
        if (lev > 0) {
            int pb = b - 3;
            const int32_t ph = g->h[pb], pw = g->w[pb], py0 = y >> 1, px0 = x >> 1;
            if (py0 >= 1 && px0 >= 1 && py0 + 1 < ph && px0 + 1 < pw) {
                /* inside the parent band: the same nine values without the border rule (speed only) */
                const int32_t *P0 = v + g->off[pb] + (size_t)(py0 - 1) * pw + (px0 - 1);
                for (int dy = 0; dy < 3; dy++, P0 += pw)
                    pn += (uint32_t)abs(P0[0]) + (uint32_t)abs(P0[1]) + (uint32_t)abs(P0[2]);
            } else {
                for (int dy = -1; dy <= 1; dy++)
                    for (int dx = -1; dx <= 1; dx++) {
                        int32_t py = py0 + dy, px = px0 + dx;
                        if (py >= 0 && px >= 0) pn += (uint32_t)abs(seq_at(v + g->off[pb], ph, pw, py, px));
                    }
            }
        } else {
            pn = sib;
        }
        int c3 = pn == 0 ? 0 : (pn <= 2 ? 1 : (pn <= 6 ? 2 : 3));
        *zctx2 = (c1 * 5 + c2) * 4 + c3;
        *zmix = ab * 4 + c3;
    }
    uint32_t t = own + ps;
    if (t > (1u << 30)) t = 1u << 30;
    int a = act_bucket(t);
    if (a > 15) a = 15;
    int k = own == 0 ? 0 : (ps == 0 ? 1 : 2);
    *ctx = 16 * k + a;
    *sctx = 9 * sgn3(N) + 3 * sgn3(W) + sgn3(P);
}

static inline int seq_model(const SeqGeom *g, int b) {
    int lev = (b - 1) / 3, o = (b - 1) % 3;
    int f = g->nlev - 1 - lev;
    if (f > 3) f = 3;
    return 1 + 2 * f + (o == 2);
}

/* Logistic mixing of two significance estimates (as in the PAQ family), integer only:
 * squash by interpolation in a 33-entry table, stretch as its exact inverse table. */
static const int16_t seq_sq_t[33] = {1, 2, 3, 6, 10, 16, 27, 45, 73, 120, 194, 310, 488, 747, 1101, 1546, 2047,
                                     2549, 2994, 3348, 3607, 3785, 3901, 3975, 4022, 4050, 4068, 4079, 4085, 4089, 4092, 4093, 4094};
static inline int seq_squash(int d) { /* d in 1/256 -> p(1) in 1/4096 */
    if (d > 2047) d = 2047;
    if (d < -2047) d = -2047;
    int u = d + 2048, k = u >> 7, f = u & 127;
    return (seq_sq_t[k] * (128 - f) + seq_sq_t[k + 1] * f + 64) >> 7;
}
static int16_t seq_st_t[4096];
static int seq_st_ready = 0;
static void seq_stretch_init(void) {
    if (seq_st_ready) return;
    int pi = 0;
    for (int x = -2047; x <= 2047; x++) {
        int v = seq_squash(x);
        for (int i = pi; i <= v; i++) seq_st_t[i] = (int16_t)x;
        pi = v + 1;
    }
    for (int i = pi; i < 4096; i++) seq_st_t[i] = 2047;
    seq_st_ready = 1;
}
#define SEQ_NMIX 3
#ifndef SEQ_MIXLR
#define SEQ_MIXLR 1
#endif
#define SEQ_MIXSETS (SEQ_NMODELS * SEQ_ZOWN * 4 * 2) /* second half: the "magnitude > 1" mixer */
/* Format 1: an adaptive probability map (APM, secondary estimation as in the PAQ family)
 * replaces the mixer's output by a learned function of it under a second context: 33
 * interpolation nodes over the stretched probability, per (model x brightness of the
 * low-pass band over the coefficient, 8 classes x own activity, 8 x siblings nonzero);
 * the nearer node learns at rate 1/128. The brightness the mixer's views lack
 * (X-ray noise grows with the signal) enters here without diluting their contexts. */
#define SEQ_APM_SETS 128
#define SEQ_APM_N (SEQ_NMODELS * SEQ_APM_SETS)
#define SEQ_APM_RATE 7
typedef struct {
    int32_t w[SEQ_MIXSETS][SEQ_NMIX + 1]; /* Q16 */
    uint16_t apm[2][SEQ_APM_N][33];        /* P(bit = 1) in 1/65536: significance, "magnitude > 1" */
} SeqMixer;
static void seq_mixer_init(SeqMixer *mx) {
    for (int i = 0; i < SEQ_MIXSETS; i++) {
        mx->w[i][0] = 22000;
        mx->w[i][1] = 22000;
        mx->w[i][2] = 22000;
        mx->w[i][3] = 0;
    }
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < SEQ_APM_N; i++)
            for (int j = 0; j < 33; j++) mx->apm[k][i][j] = (uint16_t)(seq_squash((j - 16) * 128) * 16);
}
/* P(bit = 0) from the mixer's p0 through APM set `set` of kind k; *node receives the node to update. */
static inline uint32_t seq_apm_p(const SeqMixer *mx, int k, int set, uint32_t p0, int *node) {
    int s = seq_st_t[(65536 - p0) >> 4] + 2048; /* 1..4095 */
    int lo = s >> 7, f = s & 127;
    const uint16_t *t = mx->apm[k][set];
    *node = lo + (f >= 64);
    uint32_t q0 = 65536 - (((uint32_t)t[lo] * (128 - f) + (uint32_t)t[lo + 1] * f + 64) >> 7);
    return q0 < PROB_MIN ? PROB_MIN : (q0 > PROB_MAX ? PROB_MAX : q0);
}
static inline void seq_apm_update(SeqMixer *mx, int k, int set, int node, int bit) {
    uint16_t *t = &mx->apm[k][set][node];
    if (bit) *t += (65535 - *t) >> SEQ_APM_RATE;
    else *t -= *t >> SEQ_APM_RATE;
}
/* P(bit = 0) in 1/65536 from the two models' estimates; st[] receives the inputs for the update. */
static inline uint32_t seq_mix_p(const SeqMixer *mx, int set, const Bit *a, const Bit *b, const Bit *c, int *st) {
    st[0] = seq_st_t[(65536 - bit_p(a)) >> 4];
    st[1] = seq_st_t[(65536 - bit_p(b)) >> 4];
    st[2] = seq_st_t[(65536 - bit_p(c)) >> 4];
    st[3] = 256;
    int64_t dot = 0;
    for (int i = 0; i <= SEQ_NMIX; i++) dot += (int64_t)mx->w[set][i] * st[i];
    int d = (int)(dot >= 0 ? dot >> 16 : -((-dot) >> 16));
    uint32_t p1 = (uint32_t)seq_squash(d) << 4;
    uint32_t p0 = 65536 - p1;
    return p0 < PROB_MIN ? PROB_MIN : (p0 > PROB_MAX ? PROB_MAX : p0);
}
static inline void seq_mix_update(SeqMixer *mx, int set, const int *st, uint32_t p0, int bit) {
    int err = ((bit << 12) - (int)((65536 - p0) >> 4)); /* 1/4096 */
    for (int i = 0; i <= SEQ_NMIX; i++) {
        int64_t dw = (int64_t)st[i] * err * SEQ_MIXLR; /* learning rate */
        mx->w[set][i] += (int32_t)(dw >= 0 ? dw >> 10 : -((-dw) >> 10));
    }
}
static inline void put_bit_p(RangeEnc *e, uint32_t p0, int bit) {
    uint32_t bound = (e->range >> PROB_BITS) * p0;
    if (!bit) e->range = bound;
    else { e->low += bound; e->range -= bound; }
    while (e->range < (1u << 24)) { e->range <<= 8; enc_shift_low(e); }
}
static inline int get_bit_p(RangeDec *d, uint32_t p0) {
    uint32_t bound = (d->range >> PROB_BITS) * p0;
    int bit;
    if (d->code < bound) { d->range = bound; bit = 0; }
    else { d->code -= bound; d->range -= bound; bit = 1; }
    while (d->range < (1u << 24)) { d->range <<= 8; d->code = (d->code << 8) | dec_byte(d); }
    return bit;
}

/* Low-pass band: MED prediction from decoded neighbours, residual context
 * from the local gradient. */
static inline int32_t seq_ll_pred(const int32_t *B, int32_t w, int32_t y, int32_t x, int *ctx) {
    int32_t W = x > 0 ? B[(size_t)y * w + x - 1] : (y > 0 ? B[(size_t)(y - 1) * w + x] : 0);
    int32_t N = y > 0 ? B[(size_t)(y - 1) * w + x] : W;
    int32_t NW = (y > 0 && x > 0) ? B[(size_t)(y - 1) * w + x - 1] : N;
    int32_t NE = (y > 0 && x + 1 < w) ? B[(size_t)(y - 1) * w + x + 1] : N;
    uint32_t grad = (uint32_t)abs(W - NW) + (uint32_t)abs(N - NW) + (uint32_t)abs(NE - N);
    if (grad > (1u << 30)) grad = 1u << 30;
    *ctx = act_bucket(grad);
    return med3(W, N, W + N - NW);
}

/* -log2(p / 65536) in 1/256 bit, for the encoder's rate-distortion choice only. */
static uint16_t seq_cost_table[4097];
static int seq_cost_ready = 0;
static void seq_cost_init(void) {
    if (seq_cost_ready) return;
    for (int i = 1; i <= 4096; i++) seq_cost_table[i] = (uint16_t)(-log2((double)i / 4096.0) * 256.0 + 0.5);
    seq_cost_table[0] = seq_cost_table[1];
    seq_cost_ready = 1;
}
static inline uint32_t seq_cost(const Bit *m, int bit) {
    uint32_t p = bit_p(m);
    if (bit) p = 65536 - p;
    return seq_cost_table[p >> 4];
}

/* Bits (1/256) put_int would spend on v >= 0 without a sign, under context c (encoder only). */
static uint32_t seq_int_cost(const IntModel *m, int c, uint32_t v) {
    uint32_t bits = seq_cost(&m->b[OFF_ZERO + c], v != 0);
    if (!v) return bits;
    int ex = bitlen(v) - 1;
    for (int i = 0; i < ex; i++) bits += seq_cost(&m->b[OFF_EXPO + c * EMAX + i], 1);
    if (ex < EMAX - 1) bits += seq_cost(&m->b[OFF_EXPO + c * EMAX + ex], 0);
    if (ex >= 1) {
        int top = (v >> (ex - 1)) & 1;
        bits += seq_cost(&m->b[OFF_M1 + c * EMAX + ex], top);
        if (ex >= 2) bits += seq_cost(&m->b[OFF_M2 + (c * EMAX + ex) * 2 + top], (v >> (ex - 2)) & 1);
        if (ex > 2) bits += 256u * (uint32_t)(ex - 2);
    }
    return bits;
}

/* The coding loop, shared by encoder (enc, v holds the symbols, may be
 * changed by the rate-distortion choice) and decoder (dec, v written).
 * rdo: per coefficient |c| / step in 1/256 (encoder only, may be NULL);
 * keep: per band, the reconstruction of a magnitude 1 in 1/256 step;
 * keep2 (may be NULL: then no magnitude >= 2 is lowered): per band, where a
 * magnitude m >= 2 is reconstructed, minus m, in 1/256 step;
 * lam: squared steps per bit, in 1/256. */
static int seq_code(SeqGeom *g, IntModel *models, Bit *zbits, SeqMixer *mx, RangeEnc *enc, RangeDec *dec, int32_t *v, const int32_t *rdo,
                    const int32_t *keep, const int32_t *keep2, int32_t lam, int32_t *trc, int fmt) {
    /* low-pass band */
    {
        const int32_t h = g->h[0], w = g->w[0];
        int32_t *B = v + g->off[0];
        for (int32_t y = 0; y < h; y++)
            for (int32_t x = 0; x < w; x++) {
                int c;
                int32_t pred = seq_ll_pred(B, w, y, x, &c);
                size_t i = (size_t)y * w + x;
                if (enc) {
                    int64_t r = (int64_t)B[i] - pred;
                    if (r <= -(1 << EMAX) || r >= (1 << EMAX)) return -2;
                    put_int(enc, &models[0], c, 0, (uint32_t)(r < 0 ? -r : r), r < 0, 0);
                } else {
                    int neg;
                    uint32_t m = get_int(dec, &models[0], c, 0, &neg, 0);
                    int64_t r = neg ? -(int64_t)m : (int64_t)m;
                    int64_t val = (int64_t)pred + r;
                    if (val > (1 << 28) || val < -(1 << 28)) return -3;
                    B[i] = (int32_t)val;
                }
                if (trc) {
                    int32_t *t = trc + SEQ_TRACE * i;
                    t[0] = c;
                    t[1] = t[2] = t[3] = t[4] = t[5] = 0;
                }
            }
    }
    g->ll_min = g->ll_max = 0;
    for (size_t i = 0; i < (size_t)g->h[0] * g->w[0]; i++) {
        int32_t L = v[g->off[0] + i];
        if (i == 0 || L < g->ll_min) g->ll_min = L;
        if (i == 0 || L > g->ll_max) g->ll_max = L;
    }
    for (int b = 1; b < g->nb; b++) {
        const int32_t h = g->h[b], w = g->w[b];
        int32_t *B = v + g->off[b];
        IntModel *m = &models[seq_model(g, b)];
        Bit *zb = zbits + (size_t)seq_model(g, b) * SEQ_NZALL;
        for (int32_t y = 0; y < h; y++) {
            for (int32_t x = 0; x < w; x++) {
                int c, sc, zc, zc2, zm, st[SEQ_NMIX + 1];
                seq_ctx(g, v, b, y, x, &c, &sc, &zc, &zc2, &zm);
                Bit *za = &zb[zc], *zb2 = &zb[SEQ_ZOWN * 9 * SEQ_NBRIGHT + zc2];
                int mset = seq_model(g, b) * SEQ_ZOWN * 4 + zm;
                Bit *zb3 = &zb[SEQ_ZOWN * 9 * SEQ_NBRIGHT + 4 * 5 * 4 + c];
                uint32_t pm0 = seq_mix_p(mx, mset, za, zb2, zb3, st), pz0 = pm0;
                int aset = 0, anode = 0;
                if (fmt >= 1) {
                    int lv = (b - 1) / 3, ab = zm >> 2;
                    int32_t L = seq_at(v + g->off[0], g->h[0], g->w[0], y >> lv, x >> lv);
                    int br = (int)(((int64_t)L - g->ll_min) * 8 / ((int64_t)g->ll_max - g->ll_min + 1));
                    br = br < 0 ? 0 : (br > 7 ? 7 : br);
                    aset = seq_model(g, b) * SEQ_APM_SETS + br * 16 + (ab > 7 ? 7 : ab) * 2 + (zc % 3 > 0);
                }
                if (fmt >= 1) pz0 = seq_apm_p(mx, 0, aset, pm0, &anode);
                size_t i = (size_t)y * w + x;
                if (trc) {
                    int32_t *t = trc + SEQ_TRACE * (g->off[b] + i);
                    t[0] = c;
                    t[1] = sc;
                    t[2] = zc;
                    t[3] = zc2;
                    t[4] = mset;
                    t[5] = aset;
                }
                if (enc) {
                    int32_t val = B[i];
                    if (val <= -(1 << EMAX) || val >= (1 << EMAX)) return -2;
                    if (rdo && keep2 && (val >= 2 || val <= -2)) {
                        /* lower |v| by one when the squared error that costs is worth less than the bits it saves */
                        int32_t mg = abs(val);
                        int64_t u = rdo[g->off[b] + i];
                        int64_t r1 = (int64_t)mg * 256 + keep2[b], r0 = mg == 2 ? keep[b] : (int64_t)(mg - 1) * 256 + keep2[b];
                        int64_t more = (u - r0) * (u - r0) - (u - r1) * (u - r1); /* 1/65536 step^2 */
                        int gs = SEQ_MIXSETS / 2 + mset, sx[SEQ_NMIX + 1], gn = 0;
                        uint32_t q0 = seq_mix_p(mx, gs, &zb[SEQ_G1 + c], &zb[SEQ_G1 + NCTX + zc2], &zb[SEQ_G1 + NCTX + 4 * 5 * 4 + zc], sx);
                        if (fmt >= 1) q0 = seq_apm_p(mx, 1, aset, q0, &gn);
                        Bit gp = {(uint16_t)q0, (uint16_t)q0, 0};
                        int64_t bhi = (int64_t)seq_cost(&gp, 1) + seq_int_cost(m, c, (uint32_t)mg - 2);
                        int64_t blo = mg == 2 ? (int64_t)seq_cost(&gp, 0) : (int64_t)seq_cost(&gp, 1) + seq_int_cost(m, c, (uint32_t)mg - 3);
                        if (more * 256 < (int64_t)lam * (bhi - blo) * 256) { val += val > 0 ? -1 : 1; B[i] = val; }
                    }
                    if (rdo && (val == 1 || val == -1)) {
                        /* drop an expensive +-1 when the squared error it saves is worth less than its bits */
                        int64_t u = rdo[g->off[b] + i], k = keep[b];
                        int64_t saved = u * u - (u - k) * (u - k); /* 1/65536 step^2 */
                        Bit zp = {(uint16_t)pz0, (uint16_t)pz0, 0};
                        int64_t bits1 = (int64_t)seq_cost(&zp, 1) + seq_cost(&m->b[OFF_SIGN + sc], val < 0) +
                                        seq_cost(&zb[SEQ_G1 + c], 0);
                        int64_t bits0 = seq_cost(&zp, 0);
                        if (saved * 256 < (int64_t)lam * (bits1 - bits0) * 256) { val = 0; B[i] = 0; }
                    }
                    /* significance under its own context, then sign, then |v| - 1 by the integer coder */
                    put_bit_p(enc, pz0, val != 0);
                    bit_update(za, val != 0);
                    bit_update(zb2, val != 0);
                    bit_update(zb3, val != 0);
                    seq_mix_update(mx, mset, st, pm0, val != 0);
                    if (fmt >= 1) seq_apm_update(mx, 0, aset, anode, val != 0);
                    if (val) {
                        put_bit(enc, &m->b[OFF_SIGN + sc], val < 0);
                        /* magnitude > 1: mixed like significance, then |v| - 2 by the integer coder */
                        int gset = SEQ_MIXSETS / 2 + mset, st2[SEQ_NMIX + 1];
                        Bit *g1 = &zb[SEQ_G1 + c], *g2 = &zb[SEQ_G1 + NCTX + zc2];
                        Bit *g3 = &zb[SEQ_G1 + NCTX + 4 * 5 * 4 + zc];
                        uint32_t gm0 = seq_mix_p(mx, gset, g1, g2, g3, st2), pg0 = gm0;
                        int gnode = 0;
                        if (fmt >= 1) pg0 = seq_apm_p(mx, 1, aset, gm0, &gnode);
                        int big = abs(val) > 1;
                        put_bit_p(enc, pg0, big);
                        bit_update(g1, big);
                        bit_update(g2, big);
                        bit_update(g3, big);
                        seq_mix_update(mx, gset, st2, gm0, big);
                        if (fmt >= 1) seq_apm_update(mx, 1, aset, gnode, big);
                        if (big) put_int(enc, m, c, 0, (uint32_t)abs(val) - 2, 0, 1);
                    }
                } else {
                    int neg;
                    int sig = get_bit_p(dec, pz0);
                    bit_update(za, sig);
                    bit_update(zb2, sig);
                    bit_update(zb3, sig);
                    seq_mix_update(mx, mset, st, pm0, sig);
                    if (fmt >= 1) seq_apm_update(mx, 0, aset, anode, sig);
                    if (sig) {
                        int s = get_bit(dec, &m->b[OFF_SIGN + sc]);
                        int gset = SEQ_MIXSETS / 2 + mset, st2[SEQ_NMIX + 1];
                        Bit *g1 = &zb[SEQ_G1 + c], *g2 = &zb[SEQ_G1 + NCTX + zc2];
                        Bit *g3 = &zb[SEQ_G1 + NCTX + 4 * 5 * 4 + zc];
                        uint32_t gm0 = seq_mix_p(mx, gset, g1, g2, g3, st2), pg0 = gm0;
                        int gnode = 0;
                        if (fmt >= 1) pg0 = seq_apm_p(mx, 1, aset, gm0, &gnode);
                        int big = get_bit_p(dec, pg0);
                        bit_update(g1, big);
                        bit_update(g2, big);
                        bit_update(g3, big);
                        seq_mix_update(mx, gset, st2, gm0, big);
                        if (fmt >= 1) seq_apm_update(mx, 1, aset, gnode, big);
                        uint32_t mag = big ? get_int(dec, m, c, 0, &neg, 1) + 2 : 1;
                        if (mag >= (1u << EMAX)) return -3;
                        B[i] = s ? -(int32_t)mag : (int32_t)mag;
                    } else {
                        B[i] = 0;
                    }
                }
            }
            if (enc && enc->oom) return -1;
            if (dec && dec->overrun > 16) return -4;
        }
    }
    return 0;
}

/* All adaptive state of one image: the integer models, the significance bits, the mixer. */
static IntModel *seq_models(void) {
    IntModel *m = (IntModel *)malloc(SEQ_NMODELS * sizeof(IntModel) + SEQ_NMODELS * SEQ_NZALL * sizeof(Bit) + sizeof(SeqMixer) + 16);
    seq_stretch_init();
    if (m) {
        for (int k = 0; k < SEQ_NMODELS; k++) model_init(&m[k], NULL);
        Bit *z = (Bit *)(m + SEQ_NMODELS);
        for (int k = 0; k < SEQ_NMODELS * SEQ_NZALL; k++) bit_init(&z[k], 32768);
        seq_mixer_init((SeqMixer *)(((uintptr_t)(z + SEQ_NMODELS * SEQ_NZALL) + 15) & ~(uintptr_t)15));
    }
    return m;
}
#define SEQ_ZBITS(m) ((Bit *)((m) + SEQ_NMODELS))
#define SEQ_MIXER(m) ((SeqMixer *)(((uintptr_t)(SEQ_ZBITS(m) + SEQ_NMODELS * SEQ_NZALL) + 15) & ~(uintptr_t)15))

/* The encoder half shared by seq_encode (codes a copy) and seq_encode_into (codes in place):
 * checks the rate-distortion and reconstruction buffers against the band geometry, codes v
 * (which becomes the final symbols) into enc. 0, or -1 with a Python exception set. */
static int seq_encode_core(SeqGeom *g, int32_t *v, const Py_buffer *rb, const Py_buffer *kb, int lam, int fmt, RangeEnc *enc) {
    if ((rb->len && rb->len != (Py_ssize_t)(g->total * 4)) ||
        (kb->len && kb->len != (Py_ssize_t)g->nb * 4 && kb->len != (Py_ssize_t)g->nb * 8) || (rb->len && !kb->len)) {
        PyErr_SetString(PyExc_ValueError, "symbol, rate-distortion or reconstruction buffers do not match the band shapes");
        return -1;
    }
    IntModel *models = seq_models();
    if (!models) {
        PyErr_NoMemory();
        return -1;
    }
    seq_cost_init();
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = seq_code(g, models, SEQ_ZBITS(models), SEQ_MIXER(models), enc, NULL, v, rb->len ? (const int32_t *)rb->buf : NULL,
                  (const int32_t *)kb->buf, kb->len == (Py_ssize_t)g->nb * 8 ? (const int32_t *)kb->buf + g->nb : NULL, lam, NULL, fmt);
    if (rc == 0) enc_flush(enc);
    Py_END_ALLOW_THREADS
    free(models);
    if (rc == -2) {
        PyErr_SetString(PyExc_ValueError, "a coefficient is too large to code");
        return -1;
    }
    if (rc < 0 || enc->oom) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* seq_encode(symbols int32, shapes int32, rdo int32 (or empty), keep int32 per band, optionally
 * followed by keep2 per band (or empty), lam[, format])
 * -> (bytes, final symbols int32 bytes) */
static PyObject *py_seq_encode(PyObject *self, PyObject *args) {
    Py_buffer vb, sb, rb, kb;
    int lam = 0, fmt = 0;
    if (!PyArg_ParseTuple(args, "y*y*y*y*i|i", &vb, &sb, &rb, &kb, &lam, &fmt)) return NULL;
    PyObject *result = NULL;
    int32_t *v = NULL;
    RangeEnc enc;
    enc_init(&enc);
    SeqGeom g;
    if (seq_geom(&g, (const int32_t *)sb.buf, sb.len / 4) < 0) goto done;
    if (vb.len != (Py_ssize_t)(g.total * 4)) {
        PyErr_SetString(PyExc_ValueError, "symbol, rate-distortion or reconstruction buffers do not match the band shapes");
        goto done;
    }
    v = (int32_t *)malloc(g.total * 4 + 4);
    if (!v) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(v, vb.buf, g.total * 4);
    if (seq_encode_core(&g, v, &rb, &kb, lam, fmt, &enc) < 0) goto done;
    result = Py_BuildValue("(y#y#)", (const char *)enc.buf, (Py_ssize_t)enc.len, (const char *)v, (Py_ssize_t)(g.total * 4));
done:
    free(v);
    free(enc.buf);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&sb);
    PyBuffer_Release(&rb);
    PyBuffer_Release(&kb);
    return result;
}

/* seq_decode(payload, shapes int32) -> bytes of int32 symbols; ValueError on a damaged stream. */
static PyObject *py_seq_decode(PyObject *self, PyObject *args) {
    Py_buffer db, sb;
    int fmt = 0;
    if (!PyArg_ParseTuple(args, "y*y*|i", &db, &sb, &fmt)) return NULL;
    PyObject *result = NULL;
    IntModel *models = NULL;
    SeqGeom g;
    if (seq_geom(&g, (const int32_t *)sb.buf, sb.len / 4) < 0) goto done;
    models = seq_models();
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(g.total * 4));
    if (!out || !models) {
        Py_XDECREF(out);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }
    int32_t *v = (int32_t *)PyBytes_AS_STRING(out);
    memset(v, 0, g.total * 4);
    RangeDec dec;
    dec_init(&dec, (const uint8_t *)db.buf, (size_t)db.len);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = seq_code(&g, models, SEQ_ZBITS(models), SEQ_MIXER(models), NULL, &dec, v, NULL, NULL, NULL, 0, NULL, fmt);
    Py_END_ALLOW_THREADS
    if (rc < 0 || dec.overrun > 0 || dec.pos != dec.len) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_ValueError, rc < 0 || dec.overrun ? "coefficient stream ends early or holds values out of range"
                                                                : "coefficient stream has bytes after the last band");
        goto done;
    }
    result = out;
done:
    free(models);
    PyBuffer_Release(&db);
    PyBuffer_Release(&sb);
    return result;
}

/* seq_trace(symbols int32, shapes int32[, format]) -> bytes of int32, SEQ_TRACE context values per
 * coefficient, for tests. */
static PyObject *py_seq_trace(PyObject *self, PyObject *args) {
    Py_buffer vb, sb;
    int fmt = 0;
    if (!PyArg_ParseTuple(args, "y*y*|i", &vb, &sb, &fmt)) return NULL;
    PyObject *result = NULL;
    IntModel *models = NULL;
    int32_t *v = NULL, *trc = NULL;
    RangeEnc enc;
    enc_init(&enc);
    SeqGeom g;
    if (seq_geom(&g, (const int32_t *)sb.buf, sb.len / 4) < 0) goto done;
    if (vb.len != (Py_ssize_t)(g.total * 4)) {
        PyErr_SetString(PyExc_ValueError, "symbol buffer does not match the band shapes");
        goto done;
    }
    models = seq_models();
    v = (int32_t *)malloc(g.total * 4 + 4);
    trc = (int32_t *)malloc(g.total * 4 * SEQ_TRACE + 4 * SEQ_TRACE);
    if (!models || !v || !trc) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(v, vb.buf, g.total * 4);
    int rc = seq_code(&g, models, SEQ_ZBITS(models), SEQ_MIXER(models), &enc, NULL, v, NULL, NULL, NULL, 0, trc, fmt);
    if (rc < 0) {
        PyErr_SetString(PyExc_ValueError, "could not code these symbols");
        goto done;
    }
    result = PyBytes_FromStringAndSize((const char *)trc, (Py_ssize_t)(g.total * 4 * SEQ_TRACE));
done:
    free(models);
    free(v);
    free(trc);
    free(enc.buf);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&sb);
    return result;
}

/* ------------------------------------------------------------------------ */
/* 6. the pixel side of rsc3: CDF 9/7 lifting, quantizer, dequantizer       */
/*
 * Float arithmetic on pixels and coefficients only: nothing here decides a
 * decoded symbol (the parse path is sections 1-5). The lifting restates
 * radseal/codec/wavelet.py operation for operation: the same constants
 * rounded to the working precision, the same operand order, whole-sample
 * symmetric extension at both ends for every length, and no fused
 * multiply-add (-std=c99 turns contraction off). The tests require agreement
 * with the numpy reference within float tolerance; on IEEE machines the two
 * agree to the last bit.
 *
 * Layout ("packed"): an h x w array (row stride w) transformed in place.
 * After a level the region it worked on holds [LL | HL ; LH | HH], low
 * rows/columns first ((n + 1) / 2 of them), and the next level works on LL.
 * Vertical passes run on strips of WT_STRIP columns gathered into a
 * buffer, so that every lifting step is a loop over contiguous memory and
 * the extra memory is one strip (h x WT_STRIP values), whatever the size.
 */
#define WT_STRIP 64
#define WT_A (-1.586134342059924)
#define WT_B (-0.052980118572961)
#define WT_C 0.882911075530934
#define WT_D 0.443506852043971
#define WT_K 1.230174104914001
#define WT_MAXLEV 32

typedef struct {
    int32_t r0, c0, h, w; /* position in the packed array and shape, in coding order */
} WtBand;

/* Region sizes per level, finest first; returns the number of levels done. */
static int wt_levels(int32_t h, int32_t w, int levels, int32_t *rh, int32_t *rw) {
    int n = 0;
    while (n < levels && n < WT_MAXLEV && h >= 2 && w >= 2) {
        rh[n] = h;
        rw[n] = w;
        h = (h + 1) / 2;
        w = (w + 1) / 2;
        n++;
    }
    return n;
}

/* Bands in coding order: low-pass, then per level from the coarsest hl, lh, hh. */
static int wt_bands(int32_t h, int32_t w, int levels, WtBand *bands) {
    int32_t rh[WT_MAXLEV], rw[WT_MAXLEV];
    int n = wt_levels(h, w, levels, rh, rw);
    int32_t lh = n ? (rh[n - 1] + 1) / 2 : h, lw = n ? (rw[n - 1] + 1) / 2 : w;
    int nb = 0;
    bands[nb++] = (WtBand){0, 0, lh, lw};
    for (int l = n - 1; l >= 0; l--) {
        int32_t lo_r = (rh[l] + 1) / 2, lo_c = (rw[l] + 1) / 2;
        bands[nb++] = (WtBand){0, lo_c, lo_r, rw[l] - lo_c};        /* hl */
        bands[nb++] = (WtBand){lo_r, 0, rh[l] - lo_r, lo_c};        /* lh */
        bands[nb++] = (WtBand){lo_r, lo_c, rh[l] - lo_r, rw[l] - lo_c}; /* hh */
    }
    return nb;
}

/* One lifting kernel per working precision: e holds ne vectors of S values,
 * o holds no (ne - 1 or ne, >= 1) vectors; vector i is sample 2i (e) or 2i + 1 (o). */
#define WT_KERNELS(T, SUF)                                                                                   \
    static inline void wt_fwd1_##SUF(T *restrict e, T *restrict o, int ne, int no, int S) {                 \
        const T a = (T)WT_A, b = (T)WT_B, c = (T)WT_C, d = (T)WT_D, k = (T)WT_K;                             \
        for (int i = 0; i < no; i++) {                                                                       \
            T *oi = o + (size_t)i * S;                                                                       \
            const T *e0 = e + (size_t)i * S, *e1 = e + (size_t)(i + 1 < ne ? i + 1 : ne - 1) * S;           \
            for (int j = 0; j < S; j++) oi[j] += a * (e0[j] + e1[j]);                                        \
        }                                                                                                    \
        for (int i = 0; i < ne; i++) {                                                                       \
            T *ei = e + (size_t)i * S;                                                                       \
            const T *o0 = o + (size_t)(i > 0 ? i - 1 : 0) * S, *o1 = o + (size_t)(i < no ? i : no - 1) * S;  \
            for (int j = 0; j < S; j++) ei[j] += b * (o0[j] + o1[j]);                                        \
        }                                                                                                    \
        for (int i = 0; i < no; i++) {                                                                       \
            T *oi = o + (size_t)i * S;                                                                       \
            const T *e0 = e + (size_t)i * S, *e1 = e + (size_t)(i + 1 < ne ? i + 1 : ne - 1) * S;           \
            for (int j = 0; j < S; j++) oi[j] += c * (e0[j] + e1[j]);                                        \
        }                                                                                                    \
        for (int i = 0; i < ne; i++) {                                                                       \
            T *ei = e + (size_t)i * S;                                                                       \
            const T *o0 = o + (size_t)(i > 0 ? i - 1 : 0) * S, *o1 = o + (size_t)(i < no ? i : no - 1) * S;  \
            for (int j = 0; j < S; j++) ei[j] += d * (o0[j] + o1[j]);                                        \
        }                                                                                                    \
        for (size_t j = 0; j < (size_t)ne * S; j++) e[j] = e[j] / k;                                         \
        for (size_t j = 0; j < (size_t)no * S; j++) o[j] = o[j] * k;                                         \
    }                                                                                                        \
    static inline void wt_inv1_##SUF(T *restrict e, T *restrict o, int ne, int no, int S) {                 \
        const T a = (T)WT_A, b = (T)WT_B, c = (T)WT_C, d = (T)WT_D, k = (T)WT_K;                             \
        for (size_t j = 0; j < (size_t)ne * S; j++) e[j] = e[j] * k;                                         \
        for (size_t j = 0; j < (size_t)no * S; j++) o[j] = o[j] / k;                                         \
        for (int i = 0; i < ne; i++) {                                                                       \
            T *ei = e + (size_t)i * S;                                                                       \
            const T *o0 = o + (size_t)(i > 0 ? i - 1 : 0) * S, *o1 = o + (size_t)(i < no ? i : no - 1) * S;  \
            for (int j = 0; j < S; j++) ei[j] -= d * (o0[j] + o1[j]);                                        \
        }                                                                                                    \
        for (int i = 0; i < no; i++) {                                                                       \
            T *oi = o + (size_t)i * S;                                                                       \
            const T *e0 = e + (size_t)i * S, *e1 = e + (size_t)(i + 1 < ne ? i + 1 : ne - 1) * S;           \
            for (int j = 0; j < S; j++) oi[j] -= c * (e0[j] + e1[j]);                                        \
        }                                                                                                    \
        for (int i = 0; i < ne; i++) {                                                                       \
            T *ei = e + (size_t)i * S;                                                                       \
            const T *o0 = o + (size_t)(i > 0 ? i - 1 : 0) * S, *o1 = o + (size_t)(i < no ? i : no - 1) * S;  \
            for (int j = 0; j < S; j++) ei[j] -= b * (o0[j] + o1[j]);                                        \
        }                                                                                                    \
        for (int i = 0; i < no; i++) {                                                                       \
            T *oi = o + (size_t)i * S;                                                                       \
            const T *e0 = e + (size_t)i * S, *e1 = e + (size_t)(i + 1 < ne ? i + 1 : ne - 1) * S;           \
            for (int j = 0; j < S; j++) oi[j] -= a * (e0[j] + e1[j]);                                        \
        }                                                                                                    \
    }                                                                                                        \
    /* One level on the region h x w (both >= 2) of an array with row stride W; tmp: max(w, h * WT_STRIP). */ \
    static void wt_level_##SUF(T *x, int32_t h, int32_t w, int32_t W, T *tmp, int inverse) {              \
        const int ne = (w + 1) / 2, no = w / 2, me = (h + 1) / 2, mo = h / 2;                               \
        if (inverse) goto vertical;                                                                          \
    horizontal:                                                                                              \
        for (int32_t r = 0; r < h; r++) {                                                                    \
            T *row = x + (size_t)r * W;                                                                      \
            if (inverse) {                                                                                   \
                memcpy(tmp, row, (size_t)w * sizeof(T));                                                     \
                wt_inv1_##SUF(tmp, tmp + ne, ne, no, 1);                                                     \
                for (int i = 0; i < no; i++) { row[2 * i] = tmp[i]; row[2 * i + 1] = tmp[ne + i]; }          \
                if (ne > no) row[2 * no] = tmp[no];                                                          \
            } else {                                                                                         \
                for (int i = 0; i < no; i++) { tmp[i] = row[2 * i]; tmp[ne + i] = row[2 * i + 1]; }          \
                if (ne > no) tmp[no] = row[2 * no];                                                          \
                wt_fwd1_##SUF(tmp, tmp + ne, ne, no, 1);                                                     \
                memcpy(row, tmp, (size_t)w * sizeof(T));                                                     \
            }                                                                                                \
        }                                                                                                    \
        if (inverse) return;                                                                                 \
    vertical:                                                                                                \
        for (int32_t c0 = 0; c0 < w; c0 += WT_STRIP) {                                                       \
            const int S = w - c0 < WT_STRIP ? w - c0 : WT_STRIP;                                             \
            T *te = tmp, *to = tmp + (size_t)me * S;                                                         \
            for (int32_t r = 0; r < h; r++) {                                                                \
                const T *src = x + (size_t)r * W + c0;                                                       \
                T *dst = inverse ? tmp + (size_t)r * S : ((r & 1) ? to + (size_t)(r >> 1) * S : te + (size_t)(r >> 1) * S); \
                memcpy(dst, src, (size_t)S * sizeof(T));                                                     \
            }                                                                                                \
            if (inverse) wt_inv1_##SUF(te, to, me, mo, S);                                                   \
            else wt_fwd1_##SUF(te, to, me, mo, S);                                                           \
            for (int32_t r = 0; r < h; r++) {                                                                \
                T *dst = x + (size_t)r * W + c0;                                                             \
                const T *src = inverse ? ((r & 1) ? to + (size_t)(r >> 1) * S : te + (size_t)(r >> 1) * S) : tmp + (size_t)r * S; \
                memcpy(dst, src, (size_t)S * sizeof(T));                                                     \
            }                                                                                                \
        }                                                                                                    \
        if (inverse) goto horizontal;                                                                        \
    }                                                                                                        \
    static int wt_run_##SUF(T *x, int32_t h, int32_t w, int levels, int inverse) {                          \
        int32_t rh[WT_MAXLEV], rw[WT_MAXLEV];                                                                \
        int n = wt_levels(h, w, levels, rh, rw);                                                             \
        if (!n) return 0;                                                                                    \
        size_t need = (size_t)h * WT_STRIP > (size_t)w ? (size_t)h * WT_STRIP : (size_t)w;                   \
        T *tmp = (T *)malloc(need * sizeof(T));                                                              \
        if (!tmp) return -1;                                                                                 \
        if (inverse)                                                                                         \
            for (int l = n - 1; l >= 0; l--) wt_level_##SUF(x, rh[l], rw[l], w, tmp, 1);                    \
        else                                                                                                 \
            for (int l = 0; l < n; l++) wt_level_##SUF(x, rh[l], rw[l], w, tmp, 0);                         \
        free(tmp);                                                                                           \
        return n;                                                                                            \
    }
WT_KERNELS(float, f32)
WT_KERNELS(double, f64)

/* Dead-zone quantizer and the encoder's |c| / step (numpy's subband.quantize and seq.py's
 * arithmetic: T division and addition, then sign), per band in coding order. */
#define WT_QUANT(T, SUF)                                                                                     \
    static void wt_quantize_##SUF(const T *x, int32_t W, const WtBand *bd, int nb, const double *steps, double rounding, \
                                  int32_t *sym, int32_t *rdo) {                                              \
        size_t pos = 0;                                                                                      \
        for (int b = 0; b < nb; b++) {                                                                       \
            const T s = (T)steps[b], rnd = (T)rounding, lim = (T)(1 << 30);                                  \
            const double sd = steps[b], ulim = (double)(1 << 20), shift = 4503599627370496.0;                \
            for (int32_t r = 0; r < bd[b].h; r++) {                                                          \
                const T *row = x + (size_t)(bd[b].r0 + r) * W + bd[b].c0;                                    \
                int32_t *sq = sym + pos, *rq = rdo ? rdo + pos : NULL;                                       \
                const int32_t n = bd[b].w;                                                                   \
                pos += (size_t)n;                                                                            \
                if (b == 0) { /* low-pass: round half to even */                                             \
                    for (int32_t c = 0; c < n; c++) {                                                        \
                        double q = nearbyint((double)(row[c] / s));                                          \
                        sq[c] = q != q ? 0 : (q > lim ? (1 << 30) : (q < -lim ? -(1 << 30) : (int32_t)q));   \
                        if (rq) rq[c] = 0;                                                                   \
                    }                                                                                        \
                    continue;                                                                                \
                }                                                                                            \
                /* sign(c) floor(|c| / step + rounding): the floor of a non-negative value is its         \
                 * truncation; values past 2^30 (and NaN) become 2^30, which the coder refuses */           \
                for (int32_t c = 0; c < n; c++) {                                                            \
                    T v = row[c], a = v < 0 ? -v : v, f = a / s + rnd;                                       \
                    f = f < lim ? f : lim;                                                                   \
                    int32_t qi = (int32_t)f;                                                                 \
                    sq[c] = qi * ((v > 0) - (v < 0));                                                        \
                }                                                                                            \
                /* |c| / step in 1/256, rounded half to even (as nearbyint) by the 2^52 shift */            \
                if (rq)                                                                                      \
                    for (int32_t c = 0; c < n; c++) {                                                        \
                        T v = row[c], a = v < 0 ? -v : v;                                                    \
                        double u = (double)a / sd * 256.0;                                                   \
                        u = u < ulim ? u : ulim;                                                             \
                        rq[c] = (int32_t)((u + shift) - shift);                                              \
                    }                                                                                        \
            }                                                                                                \
        }                                                                                                    \
    }                                                                                                        \
    /* Per detail band, the mean position of |c| / step inside its bin for |q| = 1 and for |q| >= 2,    \
     * in 1/256 (0..255); a class with no member gets the dead zone's own rounding. */                       \
    static void wt_offsets_##SUF(const T *x, int32_t W, const WtBand *bd, int nb, const double *steps, double rounding, \
                                 const int32_t *sym, uint8_t *out) {                                         \
        size_t pos = (size_t)bd[0].h * bd[0].w;                                                              \
        out[0] = out[1] = 0;                                                                                 \
        for (int b = 1; b < nb; b++) {                                                                       \
            double sum[2] = {0, 0};                                                                          \
            size_t cnt[2] = {0, 0};                                                                          \
            for (int32_t r = 0; r < bd[b].h; r++) {                                                          \
                const T *row = x + (size_t)(bd[b].r0 + r) * W + bd[b].c0;                                    \
                for (int32_t c = 0; c < bd[b].w; c++, pos++) {                                               \
                    int32_t q = sym[pos];                                                                    \
                    if (!q) continue;                                                                        \
                    double m = q < 0 ? -(double)q : (double)q;                                               \
                    T v = row[c];                                                                            \
                    double u = (double)(v < 0 ? -v : v) / steps[b];                                          \
                    int k = m >= 2;                                                                          \
                    sum[k] += u - (m - rounding);                                                            \
                    cnt[k]++;                                                                                \
                }                                                                                            \
            }                                                                                                \
            for (int k = 0; k < 2; k++) {                                                                    \
                double t = cnt[k] ? nearbyint(sum[k] / (double)cnt[k] * 256.0) : nearbyint(rounding * 256.0); \
                out[2 * b + k] = (uint8_t)(t < 0 ? 0 : (t > 255 ? 255 : t));                                \
            }                                                                                                \
        }                                                                                                    \
    }                                                                                                        \
    /* Reconstruction: detail ((|q| - rounding + offset) * step, signed), low-pass q * step. */              \
    static void wt_dequantize_##SUF(const int32_t *sym, T *x, int32_t W, const WtBand *bd, int nb, const double *steps, \
                                    double rounding, const uint8_t *offs) {                                  \
        size_t pos = 0;                                                                                      \
        for (int b = 0; b < nb; b++) {                                                                       \
            const T s = (T)steps[b], rnd = (T)rounding;                                                      \
            const T th1 = (T)(offs[2 * b] / 256.0), th2 = (T)(offs[2 * b + 1] / 256.0);                      \
            for (int32_t r = 0; r < bd[b].h; r++) {                                                          \
                T *row = x + (size_t)(bd[b].r0 + r) * W + bd[b].c0;                                          \
                for (int32_t c = 0; c < bd[b].w; c++, pos++) {                                               \
                    int32_t q = sym[pos];                                                                    \
                    if (b == 0) { row[c] = (T)((double)q * steps[0]); continue; }                            \
                    if (!q) { row[c] = 0; continue; }                                                        \
                    int64_t m = q < 0 ? -(int64_t)q : q;                                                     \
                    T level = ((T)m - rnd + (m == 1 ? th1 : th2)) * s;                                       \
                    row[c] = q < 0 ? -level : level;                                                         \
                }                                                                                            \
            }                                                                                                \
        }                                                                                                    \
    }
WT_QUANT(float, f32)
WT_QUANT(double, f64)

/* Shared argument checks: a writable or readable buffer of h * w values of the given precision. */
static int wt_check(Py_buffer *b, int32_t h, int32_t w, int dbl) {
    if (h < 1 || w < 1 || h > 65536 || w > 65536 || (size_t)h * w > (size_t)MAX_PIXELS) {
        PyErr_SetString(PyExc_ValueError, "image size out of range");
        return -1;
    }
    if (b->len != (Py_ssize_t)((size_t)h * w * (dbl ? 8 : 4))) {
        PyErr_SetString(PyExc_ValueError, "buffer does not hold h * w values of the given precision");
        return -1;
    }
    return 0;
}

/* wt_forward(buf (writable, float32 or float64), h, w, levels, is_double) -> levels done; in place. */
static PyObject *py_wt_run(PyObject *args, int inverse) {
    Py_buffer xb;
    int h, w, levels, dbl;
    if (!PyArg_ParseTuple(args, "w*iiip", &xb, &h, &w, &levels, &dbl)) return NULL;
    PyObject *result = NULL;
    if (wt_check(&xb, h, w, dbl) < 0) goto done;
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = dbl ? wt_run_f64((double *)xb.buf, h, w, levels, inverse) : wt_run_f32((float *)xb.buf, h, w, levels, inverse);
    Py_END_ALLOW_THREADS
    if (n < 0) PyErr_NoMemory();
    else result = PyLong_FromLong(n);
done:
    PyBuffer_Release(&xb);
    return result;
}
static PyObject *py_wt_forward(PyObject *self, PyObject *args) { return py_wt_run(args, 0); }
static PyObject *py_wt_inverse(PyObject *self, PyObject *args) { return py_wt_run(args, 1); }

/* Band table of a packed array, checked against per-band steps (float64, coding order). */
static int wt_setup(Py_buffer *xb, int h, int w, int levels, int dbl, Py_buffer *stb, WtBand *bd) {
    if (wt_check(xb, h, w, dbl) < 0) return -1;
    int nb = wt_bands(h, w, levels, bd);
    if (stb->len != (Py_ssize_t)nb * 8) {
        PyErr_SetString(PyExc_ValueError, "one float64 step per band is needed");
        return -1;
    }
    for (int b = 0; b < nb; b++) {
        double s = ((const double *)stb->buf)[b];
        if (!(s > 0) || !isfinite(s)) {
            PyErr_SetString(PyExc_ValueError, "quantizer steps must be positive");
            return -1;
        }
    }
    return nb;
}

/* seq_quantize(coeffs, h, w, levels, is_double, steps, rounding, sym out int32, rdo out int32 (or empty)) */
static PyObject *py_seq_quantize(PyObject *self, PyObject *args) {
    Py_buffer xb, stb, sb, rb;
    int h, w, levels, dbl;
    double rounding;
    if (!PyArg_ParseTuple(args, "y*iiipy*dw*w*", &xb, &h, &w, &levels, &dbl, &stb, &rounding, &sb, &rb)) return NULL;
    PyObject *result = NULL;
    WtBand bd[3 * WT_MAXLEV + 1];
    int nb = wt_setup(&xb, h, w, levels, dbl, &stb, bd);
    if (nb < 0) goto done;
    if (sb.len != (Py_ssize_t)((size_t)h * w * 4) || (rb.len && rb.len != sb.len)) {
        PyErr_SetString(PyExc_ValueError, "symbol buffers must hold h * w int32");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    if (dbl) wt_quantize_f64((const double *)xb.buf, w, bd, nb, (const double *)stb.buf, rounding, (int32_t *)sb.buf, rb.len ? (int32_t *)rb.buf : NULL);
    else wt_quantize_f32((const float *)xb.buf, w, bd, nb, (const double *)stb.buf, rounding, (int32_t *)sb.buf, rb.len ? (int32_t *)rb.buf : NULL);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&xb);
    PyBuffer_Release(&stb);
    PyBuffer_Release(&sb);
    PyBuffer_Release(&rb);
    return result;
}

/* seq_offsets(coeffs, h, w, levels, is_double, steps, rounding, sym int32) -> bytes (2 per band) */
static PyObject *py_seq_offsets(PyObject *self, PyObject *args) {
    Py_buffer xb, stb, sb;
    int h, w, levels, dbl;
    double rounding;
    if (!PyArg_ParseTuple(args, "y*iiipy*dy*", &xb, &h, &w, &levels, &dbl, &stb, &rounding, &sb)) return NULL;
    PyObject *result = NULL;
    WtBand bd[3 * WT_MAXLEV + 1];
    uint8_t out[2 * (3 * WT_MAXLEV + 1)];
    int nb = wt_setup(&xb, h, w, levels, dbl, &stb, bd);
    if (nb < 0) goto done;
    if (sb.len != (Py_ssize_t)((size_t)h * w * 4)) {
        PyErr_SetString(PyExc_ValueError, "symbol buffer must hold h * w int32");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    if (dbl) wt_offsets_f64((const double *)xb.buf, w, bd, nb, (const double *)stb.buf, rounding, (const int32_t *)sb.buf, out);
    else wt_offsets_f32((const float *)xb.buf, w, bd, nb, (const double *)stb.buf, rounding, (const int32_t *)sb.buf, out);
    Py_END_ALLOW_THREADS
    result = PyBytes_FromStringAndSize((const char *)out, 2 * nb);
done:
    PyBuffer_Release(&xb);
    PyBuffer_Release(&stb);
    PyBuffer_Release(&sb);
    return result;
}

/* seq_dequantize(sym int32, h, w, levels, is_double, steps, rounding, offsets (2 per band), out (writable)) */
static PyObject *py_seq_dequantize(PyObject *self, PyObject *args) {
    Py_buffer xb, stb, sb, ob;
    int h, w, levels, dbl;
    double rounding;
    if (!PyArg_ParseTuple(args, "y*iiipy*dy*w*", &sb, &h, &w, &levels, &dbl, &stb, &rounding, &ob, &xb)) return NULL;
    PyObject *result = NULL;
    WtBand bd[3 * WT_MAXLEV + 1];
    int nb = wt_setup(&xb, h, w, levels, dbl, &stb, bd);
    if (nb < 0) goto done;
    if (sb.len != (Py_ssize_t)((size_t)h * w * 4) || ob.len != 2 * nb) {
        PyErr_SetString(PyExc_ValueError, "symbols or offsets do not match the band layout");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    if (dbl) wt_dequantize_f64((const int32_t *)sb.buf, (double *)xb.buf, w, bd, nb, (const double *)stb.buf, rounding, (const uint8_t *)ob.buf);
    else wt_dequantize_f32((const int32_t *)sb.buf, (float *)xb.buf, w, bd, nb, (const double *)stb.buf, rounding, (const uint8_t *)ob.buf);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&xb);
    PyBuffer_Release(&stb);
    PyBuffer_Release(&sb);
    PyBuffer_Release(&ob);
    return result;
}

/* seq_encode_into(symbols int32 (writable: receives the final symbols), shapes, rdo, keep, lam) -> bytes.
 * seq_encode without its two copies of the symbols (the memory bound of large images). */
static PyObject *py_seq_encode_into(PyObject *self, PyObject *args) {
    Py_buffer vb, sb, rb, kb;
    int lam = 0, fmt = 0;
    if (!PyArg_ParseTuple(args, "w*y*y*y*i|i", &vb, &sb, &rb, &kb, &lam, &fmt)) return NULL;
    PyObject *result = NULL;
    RangeEnc enc;
    enc_init(&enc);
    SeqGeom g;
    if (seq_geom(&g, (const int32_t *)sb.buf, sb.len / 4) < 0) goto done;
    if (vb.len != (Py_ssize_t)(g.total * 4)) {
        PyErr_SetString(PyExc_ValueError, "symbol, rate-distortion or reconstruction buffers do not match the band shapes");
        goto done;
    }
    if (seq_encode_core(&g, (int32_t *)vb.buf, &rb, &kb, lam, fmt, &enc) < 0) goto done;
    result = PyBytes_FromStringAndSize((const char *)enc.buf, (Py_ssize_t)enc.len);
done:
    free(enc.buf);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&sb);
    PyBuffer_Release(&rb);
    PyBuffer_Release(&kb);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", py_encode, METH_VARARGS, "encode(pixels_u16, h, w, maxval, near, init[, want_state[, want_recon]]) -> bytes, (bytes, probs, counts) or (bytes, recon)"},
    {"decode", py_decode, METH_VARARGS, "decode(payload, h, w, maxval, near, init) -> bytes (uint16)"},
    {"trace", py_trace, METH_VARARGS, "trace(pixels_u16, h, w, maxval, near) -> (pred, ctx, bctx, sctx) int32 bytes"},
    {"code_ints", py_code_ints, METH_VARARGS, "code_ints(values, ctx, sctx, init) -> bytes"},
    {"decode_ints", py_decode_ints, METH_VARARGS, "decode_ints(payload, ctx, sctx, init) -> bytes (int32)"},
    {"band_encode", py_band_encode, METH_VARARGS, "band_encode(values_i32, shapes_i32) -> bytes (5/3 detail bands)"},
    {"band_decode", py_band_decode, METH_VARARGS, "band_decode(payload, shapes_i32) -> bytes (int32)"},
    {"band_trace", py_band_trace, METH_VARARGS, "band_trace(values_i32, shapes_i32) -> (ctx, sctx, lctx) int32 bytes"},
    {"seq_encode", py_seq_encode, METH_VARARGS, "seq_encode(symbols, shapes, rdo, keep, lam[, format]) -> (bytes, symbols)"},
    {"seq_decode", py_seq_decode, METH_VARARGS, "seq_decode(payload, shapes[, format]) -> bytes (int32 symbols)"},
    {"seq_trace", py_seq_trace, METH_VARARGS, "seq_trace(symbols, shapes[, format]) -> bytes (int32, 6 context values per coefficient)"},
    {"wt_forward", py_wt_forward, METH_VARARGS, "wt_forward(buf, h, w, levels, is_double) -> levels; CDF 9/7 in place"},
    {"wt_inverse", py_wt_inverse, METH_VARARGS, "wt_inverse(buf, h, w, levels, is_double) -> levels; CDF 9/7 in place"},
    {"seq_quantize", py_seq_quantize, METH_VARARGS, "seq_quantize(coeffs, h, w, levels, is_double, steps, rounding, sym_out, rdo_out)"},
    {"seq_offsets", py_seq_offsets, METH_VARARGS, "seq_offsets(coeffs, h, w, levels, is_double, steps, rounding, sym) -> bytes"},
    {"seq_dequantize", py_seq_dequantize, METH_VARARGS, "seq_dequantize(sym, h, w, levels, is_double, steps, rounding, offsets, out)"},
    {"seq_encode_into", py_seq_encode_into, METH_VARARGS, "seq_encode_into(symbols (writable), shapes, rdo, keep[, keep2], lam[, format]) -> bytes; codes in place"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_engine", "radseal's integer context-coding engine", -1,
                                    methods};

PyMODINIT_FUNC PyInit__engine(void) {
    bias_recip_init();
    PyObject *mod = PyModule_Create(&moddef);
    if (!mod) return NULL;
    PyModule_AddIntConstant(mod, "NBITS", NBITS);
    PyModule_AddIntConstant(mod, "NCTX", NCTX);
    PyModule_AddIntConstant(mod, "NSIGN", NSIGN);
    PyModule_AddIntConstant(mod, "EMAX", EMAX);
    PyModule_AddIntConstant(mod, "PROB_MIN", PROB_MIN);
    PyModule_AddIntConstant(mod, "PROB_MAX", PROB_MAX);
    PyModule_AddIntConstant(mod, "ENGINE_VERSION", 1);
    return mod;
}
