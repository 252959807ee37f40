/* SHA-256 (FIPS 180-4) and HMAC-SHA-256 (RFC 2104), for deriving a job token from a secret that only the
 * job's user can read (launcher/slurm.c). Small and dependency-free: dtrain links no crypto library. */
#ifndef DTRAIN_COMMON_SHA256_H
#define DTRAIN_COMMON_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define DTR_SHA256_BYTES 32

/* out = SHA-256(data[0..n)). */
void dtr__sha256(const void *data, size_t n, uint8_t out[DTR_SHA256_BYTES]);
/* out = HMAC-SHA-256(key, msg). */
void dtr__hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                      uint8_t out[DTR_SHA256_BYTES]);

#endif
