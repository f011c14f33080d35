/* BLAKE2b-256 hashing (libb2) for cache keys, entry checksums and file content hashes. */
#ifndef SD_CORE_HASH_H
#define SD_CORE_HASH_H

#include "core/context.h"
#include "core/files.h"
#include <blake2.h>

typedef struct sd_key {
    unsigned char b[32];
} sd_key;

typedef struct sd_hasher {
    blake2b_state state;
} sd_hasher;

void sd_hasher_init(sd_hasher *h);
void sd_hasher_bytes(sd_hasher *h, const void *data, size_t len);
/* Length-prefixed string, so ("ab","c") and ("a","bc") hash differently. NULL hashes as absent. */
void sd_hasher_str(sd_hasher *h, const char *s);
void sd_hasher_i64(sd_hasher *h, int64_t v);
void sd_hasher_key(sd_hasher *h, const sd_key *k);
void sd_hasher_final(sd_hasher *h, sd_key *out);

/* Hash of a buffer in one call. */
void sd_hash_bytes(const void *data, size_t len, sd_key *out);
/* 64 lowercase hex digits + NUL. */
void sd_key_hex(const sd_key *k, char out[65]);
bool sd_key_from_hex(const char *hex, sd_key *out);

/* The digests a file's content is memoized under: BLAKE2b-256 (cache keys, provenance) and
 * SHA-256 (what A1111 and model sites name checkpoints by; OpenSSL's libcrypto). */
typedef enum sd_file_digest { SD_DIGEST_BLAKE2B, SD_DIGEST_SHA256 } sd_file_digest;

/* Content hash of a file (opened with sd_file_open: regular files only), memoized in the
 * context's cache by path and identity (size, mtime, ctime, inode, device; core/files.h) when a
 * cache is open. SD_ERR_IO (message names the file) on failure, also when the file changed
 * while it was being read. */
sd_status sd_hash_file(sd_context *ctx, const char *path, sd_key *out);
/* The same with an explicit memo: cache NULL hashes without reading or writing any memo
 * (runs with caching off). *id gets the identity of the content hashed. */
sd_status sd_hash_file_memo(sd_context *ctx, sd_cache *cache, const char *path, sd_key *out, sd_file_id *id);
/* The same for either digest kind. */
sd_status sd_digest_file_memo(sd_context *ctx, sd_cache *cache, sd_file_digest kind, const char *path, sd_key *out,
                              sd_file_id *id);

#endif
