/* BLAKE2b-256 through libb2 (a maintained reference implementation, chosen over hand-written
 * hashing); SHA-256 of files through OpenSSL's libcrypto (Debian's, kept up to date with
 * security fixes, SHA-NI accelerated); file digests memoized in the cache database. */
#include "core/hash.h"
#include "core/cache.h"
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void sd_hasher_init(sd_hasher *h)
{
    blake2b_init(&h->state, sizeof(sd_key));
}

void sd_hasher_bytes(sd_hasher *h, const void *data, size_t len)
{
    blake2b_update(&h->state, data, len);
}

void sd_hasher_i64(sd_hasher *h, int64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)v >> (8 * i));
    sd_hasher_bytes(h, b, sizeof b);
}

void sd_hasher_str(sd_hasher *h, const char *s)
{
    if (!s) {
        sd_hasher_i64(h, -1);
        return;
    }
    size_t n = strlen(s);
    sd_hasher_i64(h, (int64_t)n);
    sd_hasher_bytes(h, s, n);
}

void sd_hasher_key(sd_hasher *h, const sd_key *k)
{
    sd_hasher_bytes(h, k->b, sizeof k->b);
}

void sd_hasher_final(sd_hasher *h, sd_key *out)
{
    blake2b_final(&h->state, out->b, sizeof out->b);
}

void sd_hash_bytes(const void *data, size_t len, sd_key *out)
{
    sd_hasher h;
    sd_hasher_init(&h);
    sd_hasher_bytes(&h, data, len);
    sd_hasher_final(&h, out);
}

void sd_key_hex(const sd_key *k, char out[65])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof k->b; i++) {
        out[2 * i] = digits[k->b[i] >> 4];
        out[2 * i + 1] = digits[k->b[i] & 15];
    }
    out[64] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool sd_key_from_hex(const char *hex, sd_key *out)
{
    if (strlen(hex) != 64)
        return false;
    for (size_t i = 0; i < 32; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out->b[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

sd_status sd_hash_file(sd_context *ctx, const char *path, sd_key *out)
{
    sd_file_id id;
    return sd_hash_file_memo(ctx, sd_context_cache(ctx), path, out, &id);
}

/* One streaming digest of either kind. */
typedef struct digest {
    sd_file_digest kind;
    sd_hasher blake;
    EVP_MD_CTX *sha;
} digest;

static bool digest_init(digest *d, sd_file_digest kind)
{
    d->kind = kind;
    d->sha = NULL;
    if (kind == SD_DIGEST_BLAKE2B) {
        sd_hasher_init(&d->blake);
        return true;
    }
    d->sha = EVP_MD_CTX_new();
    return d->sha && EVP_DigestInit_ex(d->sha, EVP_sha256(), NULL);
}

static bool digest_update(digest *d, const void *data, size_t len)
{
    if (d->kind == SD_DIGEST_BLAKE2B) {
        sd_hasher_bytes(&d->blake, data, len);
        return true;
    }
    return EVP_DigestUpdate(d->sha, data, len);
}

/* Finishes (ok: write *out) and frees. */
static bool digest_final(digest *d, bool ok, sd_key *out)
{
    if (d->kind == SD_DIGEST_BLAKE2B) {
        sd_hasher_final(&d->blake, out);
        return true;
    }
    unsigned int n = 0;
    ok = ok && d->sha && EVP_DigestFinal_ex(d->sha, out->b, &n) && n == sizeof out->b;
    EVP_MD_CTX_free(d->sha);
    return ok;
}

/* Digests the content of the open file fd. */
static sd_status hash_fd(sd_context *ctx, int fd, sd_file_digest kind, const char *path, sd_key *out)
{
    enum { CHUNK = 1 << 20 };
    unsigned char *buf = malloc(CHUNK);
    digest d;
    bool ok = digest_init(&d, kind);
    if (!buf || !ok) {
        free(buf);
        digest_final(&d, false, out);
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory hashing %s", path);
    }
    sd_status status = SD_OK;
    for (;;) {
        ssize_t n = read(fd, buf, CHUNK);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            status = sd_set_error(ctx, SD_ERR_IO, "%s: %s", path, strerror(errno));
            break;
        }
        if (!digest_update(&d, buf, (size_t)n)) {
            status = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory hashing %s", path);
            break;
        }
    }
    free(buf);
    if (!digest_final(&d, !status, out) && !status)
        status = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory hashing %s", path);
    return status;
}

sd_status sd_digest_file_memo(sd_context *ctx, sd_cache *cache, sd_file_digest kind, const char *path, sd_key *out,
                              sd_file_id *id)
{
    int fd;
    sd_status status = sd_file_open(ctx, path, &fd, id);
    if (status)
        return status;
    if (cache && sd_cache_file_hash_get(cache, kind, path, id, out)) {
        close(fd);
        return SD_OK;
    }
    status = hash_fd(ctx, fd, kind, path, out);
    /* A file written to while it was read has no single content to name. */
    if (!status && (status = sd_file_check(ctx, fd, path, id)))
        sd_error_prefix(ctx, "hashing");
    close(fd);
    if (!status && cache)
        sd_cache_file_hash_put(cache, kind, path, id, out);
    return status;
}

sd_status sd_hash_file_memo(sd_context *ctx, sd_cache *cache, const char *path, sd_key *out, sd_file_id *id)
{
    return sd_digest_file_memo(ctx, cache, SD_DIGEST_BLAKE2B, path, out, id);
}
