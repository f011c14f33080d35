/* Persistent node-output cache in SQLite (docs/design.md §5).
 *
 * Entries map a node's key (BLAKE2b-256 Merkle hash, see core/hash.h) to the serialized values
 * of all its outputs, with a checksum. WAL mode and a busy timeout let several processes share
 * one database; a checksum mismatch is a miss; a corrupt database is moved aside and rebuilt
 * with a warning. Lookups and stores never fail a run: errors become misses and warnings.
 * The same database memoizes file content hashes by path and identity (core/files.h). */
#ifndef SD_CORE_CACHE_H
#define SD_CORE_CACHE_H

#include "core/context.h"
#include "core/hash.h"
#include "core/value.h"

/* Opens (creating directories and schema as needed) the database at path. */
sd_status sd_cache_open(sd_context *ctx, const char *path, sd_cache **out);
void sd_cache_close(sd_cache *cache); /* NULL-safe */

/* On a hit fills outs[0..n_outputs-1] with new references and returns true. A miss, a
 * checksum mismatch (entry deleted, warning) or any error returns false. */
bool sd_cache_get(sd_cache *cache, const sd_key *key, size_t n_outputs, sd_value **outs);
/* Stores all outputs of a node under key (one transaction). Failures only warn. */
void sd_cache_put(sd_cache *cache, const sd_key *key, const char *node_type, size_t n_outputs,
                  sd_value *const *values);

/* File digest memo (one table per digest kind, core/hash.h) keyed by path and identity (size,
 * mtime, ctime, inode, device; core/files.h). */
bool sd_cache_file_hash_get(sd_cache *cache, sd_file_digest kind, const char *path, const sd_file_id *id,
                            sd_key *hash);
void sd_cache_file_hash_put(sd_cache *cache, sd_file_digest kind, const char *path, const sd_file_id *id,
                            const sd_key *hash);

#endif
