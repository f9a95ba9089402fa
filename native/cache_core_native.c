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

/* ---------------------------------------------------------------- bloom filter */

CC_INLINE int state_ok(const cc_bloom *b) {
    /* nbytes == ceil(nbits / 8) guarantees every idx < nbits lands inside bits[0, nbytes). */
    return b != NULL && b->bits != NULL && b->nbits >= 1 && b->nbits <= CC_MAX_BITS &&
           b->nbytes == (b->nbits + 7) / 8 && b->k >= 1 && b->k <= CC_MAX_HASHES;
}

int cc_bloom_check(const cc_bloom *b) { return state_ok(b) ? CC_OK : CC_EINVAL; }

CC_INLINE void add_key(cc_bloom *b, const uint8_t *key, size_t len) {
    uint64_t h1, h2;
    murmur3_x64_128(key, len, b->seed, &h1, &h2);
    uint8_t *bits = b->bits;
    const uint64_t m = b->nbits;
    const uint32_t k = b->k;
    /* h1 + i*h2 (mod 2^64) computed incrementally: unsigned overflow wraps, as the rule says. */
    for (uint32_t i = 0; i < k; i++) {
        const uint64_t idx = h1 % m;
        __atomic_fetch_or(&bits[idx >> 3], (uint8_t)(1u << (idx & 7)), __ATOMIC_RELAXED);
        h1 += h2;
    }
}

CC_INLINE int contains_key(const cc_bloom *b, const uint8_t *key, size_t len) {
    uint64_t h1, h2;
    murmur3_x64_128(key, len, b->seed, &h1, &h2);
    const uint8_t *bits = b->bits;
    const uint64_t m = b->nbits;
    const uint32_t k = b->k;
    for (uint32_t i = 0; i < k; i++) {
        const uint64_t idx = h1 % m;
        const uint8_t byte = __atomic_load_n(&bits[idx >> 3], __ATOMIC_RELAXED);
        if (!(byte & (1u << (idx & 7)))) {
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

/* Next key of a NUL-joined buffer starting at *pos (pos <= len): returns its length and moves
 * *pos past the key and its NUL, i.e. to len + 1 after the last key. Indices, not pointers, so
 * nothing ever points past one-past-the-end. */
CC_INLINE size_t next_joined(const char *buf, size_t len, size_t *pos) {
    const size_t start = *pos;
    const size_t rest = len - start;
    const char *nul = rest ? memchr(buf + start, 0, rest) : NULL;
    const size_t klen = nul ? (size_t)(nul - (buf + start)) : rest;
    *pos = start + klen + 1;
    return klen;
}

/* Counts the keys in a NUL-joined buffer: NULs + 1. */
static size_t count_joined(const char *buf, size_t len) {
    size_t n = 0;
    size_t pos = 0;
    while (pos <= len) {
        (void)next_joined(buf, len, &pos);
        n++;
    }
    return n;
}

int64_t cc_bloom_add_joined(cc_bloom *b, const char *buf, size_t len, size_t nkeys) {
    if (!state_ok(b) || (buf == NULL && len != 0) || len > (size_t)INT64_MAX ||
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
    size_t pos = 0;
    for (size_t i = 0; i < nkeys; i++) {
        const size_t start = pos;
        const size_t klen = next_joined(buf, len, &pos);
        add_key(b, (const uint8_t *)buf + start, klen);
    }
    return (int64_t)nkeys;
}

int64_t cc_bloom_contains_joined(const cc_bloom *b, const char *buf, size_t len, size_t nkeys,
                                 uint8_t *out, size_t outlen) {
    if (!state_ok(b) || (buf == NULL && len != 0) || len > (size_t)INT64_MAX || out == NULL ||
        outlen < nkeys || nkeys > (size_t)INT64_MAX) {
        return CC_EINVAL;
    }
    if (nkeys == 0) {
        return 0;
    }
    size_t pos = 0;
    for (size_t i = 0; i < nkeys; i++) {
        if (pos > len) {
            return CC_EKEYS; /* fewer keys than announced */
        }
        const size_t start = pos;
        const size_t klen = next_joined(buf, len, &pos);
        out[i] = (uint8_t)contains_key(b, (const uint8_t *)buf + start, klen);
    }
    if (pos != len + 1) {
        return CC_EKEYS; /* more keys than announced */
    }
    return (int64_t)nkeys;
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

int64_t cc_bloom_add_offsets(cc_bloom *b, const char *buf, size_t len, const uint64_t *ends,
                             size_t nkeys) {
    if (!state_ok(b) || (buf == NULL && len != 0) || (ends == NULL && nkeys != 0) ||
        nkeys > (size_t)INT64_MAX) {
        return CC_EINVAL;
    }
    if (!ends_ok(len, ends, nkeys)) {
        return CC_EKEYS;
    }
    uint64_t start = 0;
    for (size_t i = 0; i < nkeys; i++) {
        add_key(b, (const uint8_t *)buf + start, (size_t)(ends[i] - start));
        start = ends[i];
    }
    return (int64_t)nkeys;
}

int64_t cc_bloom_contains_offsets(const cc_bloom *b, const char *buf, size_t len,
                                  const uint64_t *ends, size_t nkeys, uint8_t *out,
                                  size_t outlen) {
    if (!state_ok(b) || (buf == NULL && len != 0) || (ends == NULL && nkeys != 0) ||
        out == NULL || outlen < nkeys || nkeys > (size_t)INT64_MAX) {
        return CC_EINVAL;
    }
    if (!ends_ok(len, ends, nkeys)) {
        return CC_EKEYS;
    }
    uint64_t start = 0;
    for (size_t i = 0; i < nkeys; i++) {
        out[i] = (uint8_t)contains_key(b, (const uint8_t *)buf + start, (size_t)(ends[i] - start));
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
