/* cache_core C core: MurmurHash3 x64_128 and bloom filter add / contains.
 *
 * This header is the single source of truth for the cffi cdef (native/build_native.py reads the
 * block between the CDEF markers), so Python and C cannot drift apart.
 *
 * Every function validates the state it is given and every length it is handed, and returns a
 * negative CC_E* code instead of reading or writing out of bounds.
 */
#ifndef CACHE_CORE_NATIVE_H
#define CACHE_CORE_NATIVE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* CDEF-BEGIN */
#define CC_OK 0
#define CC_EINVAL -1
#define CC_EKEYS -2

typedef struct {
    uint64_t lo;
    uint64_t hi;
} cc_u128;

/* One filter's state, allocated once per filter (ffi.new) so the hot path passes one pointer.
 * bits is owned by Python (an ffi.new array kept alive by the filter object). */
typedef struct {
    uint8_t *bits;
    uint64_t nbytes;   /* size of the bits array; must be ceil(nbits / 8) */
    uint64_t nbits;    /* m, 1 <= m <= CC_MAX_BITS */
    uint32_t k;        /* number of hashes, 1 <= k <= CC_MAX_HASHES */
    uint32_t seed;
    /* Derived by cc_bloom_init: floor((2^64 - 1) / nbits), the Barrett reciprocal that turns
     * "mod m" into two multiplications. Batch calls verify it; single-key calls skip that
     * division and rely on mod_m's final mask to stay in bounds whatever it holds. */
    uint64_t recip;
} cc_bloom;

cc_u128 cc_hash128(const char *key, size_t len, uint32_t seed);

/* Validates a filled-in state and derives recip; call once before first use. The per-key
 * functions re-check the state cheaply (a bad state is refused, never dereferenced). */
int cc_bloom_init(cc_bloom *b);

/* Single key: 0 on success (add) / 0 or 1 (contains), CC_EINVAL on a bad state or key. */
int cc_bloom_add(cc_bloom *b, const char *key, size_t len);
int cc_bloom_contains(const cc_bloom *b, const char *key, size_t len);

/* Batch, NUL-joined: buf holds exactly nkeys keys separated by single NUL bytes (so nkeys - 1
 * NULs). Returns nkeys on success, CC_EKEYS if buf does not split into exactly nkeys keys (add:
 * checked before any bit is written). contains writes one 0/1 byte per key into out[outlen]. */
int64_t cc_bloom_add_joined(cc_bloom *b, const char *buf, size_t len, size_t nkeys);
int64_t cc_bloom_contains_joined(const cc_bloom *b, const char *buf, size_t len, size_t nkeys,
                                 uint8_t *out, size_t outlen);

/* Batch, offsets: key i is buf[ends[i-1] : ends[i]] (ends[-1] = 0); ends must be non-decreasing
 * and ends[nkeys - 1] <= len. For keys that contain NUL bytes. */
int64_t cc_bloom_add_offsets(cc_bloom *b, const char *buf, size_t len, const uint64_t *ends,
                             size_t nkeys);
int64_t cc_bloom_contains_offsets(const cc_bloom *b, const char *buf, size_t len,
                                  const uint64_t *ends, size_t nkeys, uint8_t *out,
                                  size_t outlen);

/* Bit positions without a filter: for nkeys keys given as buf + end offsets (as in
 * cc_bloom_add_offsets), writes the k indexes of key i to out[i*k .. i*k + k - 1], in the order
 * add() sets them (idx_j = (h1 + j*h2 mod 2^64) mod nbits). For a filter that lives elsewhere (a
 * Redis string): no bit array is needed. nbits in [1, CC_MAX_BITS], k in [1, CC_MAX_HASHES],
 * outlen >= nkeys * k. Returns nkeys, CC_EINVAL on bad parameters or a too-small out, CC_EKEYS on
 * bad offsets; nothing is written on an error. */
int64_t cc_bloom_positions(uint64_t nbits, uint32_t k, uint32_t seed, const char *buf,
                           size_t len, const uint64_t *ends, size_t nkeys, uint64_t *out,
                           size_t outlen);

/* Whole-array helpers for approx_count and set operations (n = bytes). */
int64_t cc_popcount(const uint8_t *bits, size_t n);
int cc_bits_or(uint8_t *dst, const uint8_t *src, size_t n);
int cc_bits_and(uint8_t *dst, const uint8_t *src, size_t n);

/* Does nothing: the benchmark's floor for a 3-argument cffi call. */
int cc_noop3(const cc_bloom *b, const char *key, size_t len);
/* CDEF-END */

#define CC_MAX_BITS (UINT64_C(1) << 40)
#define CC_MAX_HASHES 4096u

#endif
