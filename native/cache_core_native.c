/* cache_core C core: MurmurHash3 x64_128 (Austin Appleby, public domain) and a bloom filter.
 *
 * Index rule (shared with the pure-Python fallback, see REFERENCES.md): v = murmur3_x64_128(key,
 * seed); h1 = low 64 bits, h2 = high 64 bits; idx_i = ((h1 + i*h2) mod 2^64) mod m; bit idx lives
 * at byte idx >> 3 under mask 1 << (idx & 7) (bitarray endian="little").
 *
 * cffi releases the GIL around every call, so several threads can be in here at once on the same
 * filter: bit writes are relaxed atomic ORs (a plain read-modify-write loses bits), reads are
 * relaxed atomic loads (plain loads on x86). Relaxed is enough: a bloom filter only needs each bit
 * to end up set, not any ordering between bits.
 */
#include "cache_core_native.h"

#include <string.h>

#if defined(__GNUC__)
#define CC_INLINE static inline __attribute__((always_inline))
#define CC_LIKELY(x) __builtin_expect(!!(x), 1)
#define CC_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define CC_INLINE static inline
#define CC_LIKELY(x) (x)
#define CC_UNLIKELY(x) (x)
#endif

/* ---------------------------------------------------------------- MurmurHash3 x64_128 */

CC_INLINE uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

/* Little-endian 64-bit load from any alignment: memcpy compiles to one mov on x86 and keeps
 * UBSan quiet about unaligned access; the byte swap keeps the digest identical on big-endian. */
CC_INLINE uint64_t load_le64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

CC_INLINE uint64_t fmix64(uint64_t k) {
    k ^= k >> 33;
    k *= UINT64_C(0xff51afd7ed558ccd);
    k ^= k >> 33;
    k *= UINT64_C(0xc4ceb9fe1a85ec53);
    k ^= k >> 33;
    return k;
}

CC_INLINE void murmur3_x64_128(const uint8_t *data, size_t len, uint32_t seed, uint64_t *out_lo,
                               uint64_t *out_hi) {
    const size_t nblocks = len / 16;
    uint64_t h1 = seed;
    uint64_t h2 = seed;
    const uint64_t c1 = UINT64_C(0x87c37b91114253d5);
    const uint64_t c2 = UINT64_C(0x4cf5ad432745937f);

    for (size_t i = 0; i < nblocks; i++) {
        uint64_t k1 = load_le64(data + i * 16);
        uint64_t k2 = load_le64(data + i * 16 + 8);

        k1 *= c1;
        k1 = rotl64(k1, 31);
        k1 *= c2;
        h1 ^= k1;
        h1 = rotl64(h1, 27);
        h1 += h2;
        h1 = h1 * 5 + 0x52dce729;

        k2 *= c2;
        k2 = rotl64(k2, 33);
        k2 *= c1;
        h2 ^= k2;
        h2 = rotl64(h2, 31);
        h2 += h1;
        h2 = h2 * 5 + 0x38495ab5;
    }

    const uint8_t *tail = data + nblocks * 16;
    uint64_t k1 = 0;
    uint64_t k2 = 0;
    switch (len & 15) {
    case 15: k2 ^= (uint64_t)tail[14] << 48; /* fall through */
    case 14: k2 ^= (uint64_t)tail[13] << 40; /* fall through */
    case 13: k2 ^= (uint64_t)tail[12] << 32; /* fall through */
    case 12: k2 ^= (uint64_t)tail[11] << 24; /* fall through */
    case 11: k2 ^= (uint64_t)tail[10] << 16; /* fall through */
    case 10: k2 ^= (uint64_t)tail[9] << 8;   /* fall through */
    case 9:
        k2 ^= (uint64_t)tail[8];
        k2 *= c2;
        k2 = rotl64(k2, 33);
        k2 *= c1;
        h2 ^= k2;
        /* fall through */
    case 8: k1 ^= (uint64_t)tail[7] << 56; /* fall through */
    case 7: k1 ^= (uint64_t)tail[6] << 48; /* fall through */
    case 6: k1 ^= (uint64_t)tail[5] << 40; /* fall through */
    case 5: k1 ^= (uint64_t)tail[4] << 32; /* fall through */
    case 4: k1 ^= (uint64_t)tail[3] << 24; /* fall through */
    case 3: k1 ^= (uint64_t)tail[2] << 16; /* fall through */
    case 2: k1 ^= (uint64_t)tail[1] << 8;  /* fall through */
    case 1:
        k1 ^= (uint64_t)tail[0];
        k1 *= c1;
        k1 = rotl64(k1, 31);
        k1 *= c2;
        h1 ^= k1;
        break;
    default:
        break;
    }

    h1 ^= (uint64_t)len;
    h2 ^= (uint64_t)len;
    h1 += h2;
    h2 += h1;
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 += h2;
    h2 += h1;
    *out_lo = h1;
    *out_hi = h2;
}

cc_u128 cc_hash128(const char *key, size_t len, uint32_t seed) {
    cc_u128 r = {0, 0};
    if (key == NULL && len != 0) {
        return r;
    }
    murmur3_x64_128((const uint8_t *)key, len, seed, &r.lo, &r.hi);
    return r;
}

/* ---------------------------------------------------------------- mod m without dividing */

/* Seven hardware 64-bit divisions per key cost more than the hash itself. Barrett reduction with
 * r = floor((2^64 - 1) / m): q = floor(a * r / 2^64) is floor(a / m) or one less, so a - q*m lies
 * in [0, 2m) and one conditional subtraction gives a mod m exactly, for every 64-bit a. */
#if defined(__SIZEOF_INT128__)
CC_INLINE uint64_t mod_m(uint64_t a, const cc_bloom *b) {
    const uint64_t m = b->nbits;
    const uint64_t q = (uint64_t)(((unsigned __int128)a * b->recip) >> 64);
    uint64_t r = a - q * m;
    /* Branch-free on purpose: the subtraction is needed for ~half of all indexes, so a branch
     * would mispredict constantly (measured: 2x slower batches). */
    r -= m & (0 - (uint64_t)(r >= m));
    /* Unreachable while recip is right (init derives it, batches verify it); a mask, not a
     * division, so an index can never leave the array whatever the state holds. */
    return r & (0 - (uint64_t)(r < m));
}
#else
CC_INLINE uint64_t mod_m(uint64_t a, const cc_bloom *b) { return a % b->nbits; }
#endif

/* ---------------------------------------------------------------- bloom filter */

/* What memory safety needs: nbytes == ceil(nbits / 8) puts every idx < nbits inside
 * bits[0, nbytes), and mod_m keeps every idx < nbits whatever recip holds. The single-key paths
 * check only this (a division to verify recip costs more than their C work). */
CC_INLINE int state_ok(const cc_bloom *b) {
    return b != NULL && b->bits != NULL && b->nbits >= 1 && b->nbits <= CC_MAX_BITS &&
           b->nbytes == (b->nbits + 7) / 8 && b->k >= 1 && b->k <= CC_MAX_HASHES;
}

/* The batch paths and init also verify recip, so a batch never computes wrong indexes. */
static int state_exact(const cc_bloom *b) {
    return state_ok(b) && b->recip == UINT64_MAX / b->nbits;
}

int cc_bloom_init(cc_bloom *b) {
    if (b == NULL || b->nbits == 0) {
        return CC_EINVAL;
    }
    b->recip = UINT64_MAX / b->nbits;
    return state_exact(b) ? CC_OK : CC_EINVAL;
}

/* Sets bit idx. The relaxed load first skips the locked instruction when the bit is already set
 * (re-adds, and a growing share of a filter's bits): `lock or` costs ~20 cycles and stalls the
 * pipeline, a load that hits costs ~1. A bit once set is never cleared by add, so a set bit seen
 * by the load needs no write. */
CC_INLINE void set_bit(uint8_t *bits, uint64_t idx) {
    const uint8_t mask = (uint8_t)(1u << (idx & 7));
    uint8_t *p = &bits[idx >> 3];
    if (!(__atomic_load_n(p, __ATOMIC_RELAXED) & mask)) {
        __atomic_fetch_or(p, mask, __ATOMIC_RELAXED);
    }
}

CC_INLINE int test_bit(const uint8_t *bits, uint64_t idx) {
    return (__atomic_load_n(&bits[idx >> 3], __ATOMIC_RELAXED) >> (idx & 7)) & 1;
}

/* h1 + i*h2 (mod 2^64) is computed incrementally: unsigned overflow wraps, as the rule says. */
CC_INLINE void add_key(const cc_bloom *b, const uint8_t *key, size_t len) {
    uint64_t h1, h2;
    murmur3_x64_128(key, len, b->seed, &h1, &h2);
    for (uint32_t i = 0; i < b->k; i++) {
        set_bit(b->bits, mod_m(h1, b));
        h1 += h2;
    }
}

CC_INLINE int contains_key(const cc_bloom *b, const uint8_t *key, size_t len) {
    uint64_t h1, h2;
    murmur3_x64_128(key, len, b->seed, &h1, &h2);
    for (uint32_t i = 0; i < b->k; i++) {
        if (!test_bit(b->bits, mod_m(h1, b))) {
            return 0;
        }
        h1 += h2;
    }
    return 1;
}

int cc_bloom_add(cc_bloom *b, const char *key, size_t len) {
    if (CC_UNLIKELY(!state_ok(b) || (key == NULL && len != 0))) {
        return CC_EINVAL;
    }
    add_key(b, (const uint8_t *)key, len);
    return CC_OK;
}

int cc_bloom_contains(const cc_bloom *b, const char *key, size_t len) {
    if (CC_UNLIKELY(!state_ok(b) || (key == NULL && len != 0))) {
        return CC_EINVAL;
    }
    return contains_key(b, (const uint8_t *)key, len);
}

/* ---------------------------------------------------------------- batches */

/* Batches are processed in groups: hash every key of the group and prefetch all its k bit
 * positions first, then touch the bits. The k random cache-line reads of one key overlap with
 * those of the next keys instead of being waited for one by one (the filter is larger than L1). */
#define CC_GROUP 8
#define CC_PREFETCH_MAX_K 16

typedef struct {
    const uint8_t *p;
    size_t len;
} cc_span;

/* The k positions of each of the n keys of a group, into idx, each prefetched: for writing when
 * `write` is set, else for reading. `write` is a constant at every call site, so after inlining
 * each caller keeps only its own prefetch. Needs k <= CC_PREFETCH_MAX_K; returns n * k. */
CC_INLINE size_t hash_group(const cc_bloom *b, const cc_span *keys, size_t n, uint64_t *idx,
                          const int write) {
    const uint32_t k = b->k;
    size_t t = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t h1, h2;
        murmur3_x64_128(keys[i].p, keys[i].len, b->seed, &h1, &h2);
        for (uint32_t j = 0; j < k; j++, t++) {
            idx[t] = mod_m(h1, b);
            if (write) {
                __builtin_prefetch(&b->bits[idx[t] >> 3], 1);
            } else {
                __builtin_prefetch(&b->bits[idx[t] >> 3], 0);
            }
            h1 += h2;
        }
    }
    return t;
}

/* The state is not written by an add, only the bit array it points to: hence const. */
static void add_group(const cc_bloom *b, const cc_span *keys, size_t n) {
    const uint32_t k = b->k;
    if (k > CC_PREFETCH_MAX_K) {
        for (size_t i = 0; i < n; i++) {
            add_key(b, keys[i].p, keys[i].len);
        }
        return;
    }
    uint64_t idx[CC_GROUP * CC_PREFETCH_MAX_K];
    const size_t t = hash_group(b, keys, n, idx, 1);
    for (size_t u = 0; u < t; u++) {
        set_bit(b->bits, idx[u]);
    }
}

static void contains_group(const cc_bloom *b, const cc_span *keys, size_t n, uint8_t *out) {
    const uint32_t k = b->k;
    if (k > CC_PREFETCH_MAX_K) {
        for (size_t i = 0; i < n; i++) {
            out[i] = (uint8_t)contains_key(b, keys[i].p, keys[i].len);
        }
        return;
    }
    uint64_t idx[CC_GROUP * CC_PREFETCH_MAX_K];
    (void)hash_group(b, keys, n, idx, 0);
    for (size_t i = 0; i < n; i++) {
        const uint64_t *ki = &idx[i * k];
        uint8_t hit = 1;
        for (uint32_t j = 0; j < k; j++) {
            if (!test_bit(b->bits, ki[j])) {
                hit = 0;
                break;
            }
        }
        out[i] = hit;
    }
}

/* Next key of a NUL-joined buffer starting at *pos (pos <= len): returns its length and moves
 * *pos past the key and its NUL, i.e. to len + 1 after the last key. Indices, not pointers, so
 * nothing ever points past one-past-the-end. Keys are usually short: a plain byte loop beats a
 * memchr call (whose set-up cost dominated a profile) for the first 32 bytes. */
CC_INLINE size_t next_joined(const char *buf, size_t len, size_t *pos) {
    const size_t start = *pos;
    const size_t short_end = (len - start > 32) ? start + 32 : len;
    size_t end = start;
    while (end < short_end && buf[end] != 0) {
        end++;
    }
    if (end == short_end && end < len) {
        const char *nul = memchr(buf + end, 0, len - end);
        end = nul ? (size_t)(nul - buf) : len;
    }
    *pos = end + 1;
    return end - start;
}

/* Counts the keys in a NUL-joined buffer: NULs + 1 (a loop the compiler vectorizes). */
static size_t count_joined(const char *buf, size_t len) {
    size_t nuls = 0;
    for (size_t i = 0; i < len; i++) {
        nuls += buf[i] == 0;
    }
    return nuls + 1;
}

static int ends_ok(size_t len, const uint64_t *ends, size_t nkeys) {
    uint64_t prev = 0;
    for (size_t i = 0; i < nkeys; i++) {
        if (ends[i] < prev || ends[i] > len) {
            return 0;
        }
        prev = ends[i];
    }
    return 1;
}

/* The one batch loop behind the four batch entry points. Keys come from buf[0, len): NUL-joined
 * when ends is NULL, else key i ends at ends[i] (checked by ends_ok). They are taken CC_GROUP at
 * a time; out == NULL adds them, else out[i] receives whether key i is present. Returns nkeys,
 * or CC_EKEYS when a NUL-joined buffer holds fewer keys than announced (found before reading
 * past it) or more (found at the end). ends and out are constants (NULL or not) at each call
 * site, so inlining leaves each entry point only its own branch of each test. */
CC_INLINE int64_t run_batch(const cc_bloom *b, const char *buf, size_t len, const uint64_t *ends,
                            size_t nkeys, uint8_t *out) {
    cc_span group[CC_GROUP];
    size_t pos = 0;
    size_t i = 0;
    while (i < nkeys) {
        size_t n = 0;
        for (; n < CC_GROUP && i < nkeys; n++, i++) {
            const size_t start = pos;
            if (ends == NULL) {
                if (pos > len) {
                    return CC_EKEYS; /* fewer keys than announced */
                }
                group[n].len = next_joined(buf, len, &pos);
            } else {
                pos = (size_t)ends[i];
                group[n].len = pos - start;
            }
            group[n].p = (const uint8_t *)buf + start;
        }
        if (out == NULL) {
            add_group(b, group, n);
        } else {
            contains_group(b, group, n, out + (i - n));
        }
    }
    if (ends == NULL && nkeys != 0 && pos != len + 1) {
        return CC_EKEYS; /* more keys than announced */
    }
    return (int64_t)nkeys;
}

int64_t cc_bloom_add_joined(cc_bloom *b, const char *buf, size_t len, size_t nkeys) {
    if (!state_exact(b) || (buf == NULL && len != 0) || len > (size_t)INT64_MAX ||
        nkeys > (size_t)INT64_MAX) {
        return CC_EINVAL;
    }
    if (nkeys == 0) {
        return 0;
    }
    /* Count first: a mis-split batch must not leave wrong keys in the filter. */
    if (count_joined(buf, len) != nkeys) {
        return CC_EKEYS;
    }
    return run_batch(b, buf, len, NULL, nkeys, NULL);
}

int64_t cc_bloom_contains_joined(const cc_bloom *b, const char *buf, size_t len, size_t nkeys,
                                 uint8_t *out, size_t outlen) {
    if (!state_exact(b) || (buf == NULL && len != 0) || len > (size_t)INT64_MAX || out == NULL ||
        outlen < nkeys || nkeys > (size_t)INT64_MAX) {
        return CC_EINVAL;
    }
    return run_batch(b, buf, len, NULL, nkeys, out);
}

int64_t cc_bloom_add_offsets(cc_bloom *b, const char *buf, size_t len, const uint64_t *ends,
                             size_t nkeys) {
    if (!state_exact(b) || (buf == NULL && len != 0) || (ends == NULL && nkeys != 0) ||
        nkeys > (size_t)INT64_MAX) {
        return CC_EINVAL;
    }
    if (!ends_ok(len, ends, nkeys)) {
        return CC_EKEYS;
    }
    return run_batch(b, buf, len, ends, nkeys, NULL);
}

int64_t cc_bloom_contains_offsets(const cc_bloom *b, const char *buf, size_t len,
                                  const uint64_t *ends, size_t nkeys, uint8_t *out,
                                  size_t outlen) {
    if (!state_exact(b) || (buf == NULL && len != 0) || (ends == NULL && nkeys != 0) ||
        out == NULL || outlen < nkeys || nkeys > (size_t)INT64_MAX) {
        return CC_EINVAL;
    }
    if (!ends_ok(len, ends, nkeys)) {
        return CC_EKEYS;
    }
    return run_batch(b, buf, len, ends, nkeys, out);
}

/* ---------------------------------------------------------------- positions only */

int64_t cc_bloom_positions(uint64_t nbits, uint32_t k, uint32_t seed, const char *buf,
                           size_t len, const uint64_t *ends, size_t nkeys, uint64_t *out,
                           size_t outlen) {
    if (nbits < 1 || nbits > CC_MAX_BITS || k < 1 || k > CC_MAX_HASHES ||
        (buf == NULL && len != 0) || (ends == NULL && nkeys != 0) ||
        (out == NULL && nkeys != 0) || nkeys > (size_t)INT64_MAX) {
        return CC_EINVAL;
    }
    /* nkeys * k must fit in out: compared by division, so the product never overflows. */
    if (nkeys != 0 && nkeys > outlen / k) {
        return CC_EINVAL;
    }
    if (!ends_ok(len, ends, nkeys)) {
        return CC_EKEYS;
    }
    /* mod_m reads only nbits and recip: a state without a bit array is enough here. */
    cc_bloom b = {NULL, 0, nbits, k, seed, UINT64_MAX / nbits};
    uint64_t start = 0;
    size_t t = 0;
    for (size_t i = 0; i < nkeys; i++) {
        uint64_t h1, h2;
        murmur3_x64_128((const uint8_t *)buf + start, (size_t)(ends[i] - start), seed, &h1, &h2);
        for (uint32_t j = 0; j < k; j++, t++) {
            out[t] = mod_m(h1, &b);
            h1 += h2;
        }
        start = ends[i];
    }
    return (int64_t)nkeys;
}

/* ---------------------------------------------------------------- whole-array helpers */

int64_t cc_popcount(const uint8_t *bits, size_t n) {
    if (bits == NULL && n != 0) {
        return CC_EINVAL;
    }
    int64_t total = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, bits + i, sizeof w);
        total += __builtin_popcountll(w);
    }
    for (; i < n; i++) {
        total += __builtin_popcount(bits[i]);
    }
    return total;
}

/* In-place OR / AND, byte-wise atomic so a concurrent add() into dst is never lost. */
int cc_bits_or(uint8_t *dst, const uint8_t *src, size_t n) {
    if ((dst == NULL || src == NULL) && n != 0) {
        return CC_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (src[i]) {
            __atomic_fetch_or(&dst[i], src[i], __ATOMIC_RELAXED);
        }
    }
    return CC_OK;
}

int cc_bits_and(uint8_t *dst, const uint8_t *src, size_t n) {
    if ((dst == NULL || src == NULL) && n != 0) {
        return CC_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (src[i] != 0xff) {
            __atomic_fetch_and(&dst[i], src[i], __ATOMIC_RELAXED);
        }
    }
    return CC_OK;
}

int cc_noop3(const cc_bloom *b, const char *key, size_t len) {
    (void)b;
    (void)key;
    (void)len;
    return 0;
}
