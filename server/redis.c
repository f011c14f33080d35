/* Redis connections for the queue (server/redis.h). */
#include "server/redis.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool sd_redis_url_ok(const char *url)
{
    if (!strncmp(url, "unix:", 5))
        return url[5] != '\0';
    if (strncmp(url, "redis://", 8) != 0 || !url[8] || url[8] == ':')
        return false;
    const char *colon = strchr(url + 8, ':');
    if (!colon)
        return !strchr(url + 8, '/');
    char *end;
    long port = strtol(colon + 1, &end, 10);
    return end != colon + 1 && *end == '\0' && port > 0 && port < 65536;
}

redisContext *sd_redis_connect(const char *url, char *err, size_t err_size)
{
    if (!sd_redis_url_ok(url)) {
        snprintf(err, err_size, "queue URL '%s' is not redis://HOST[:PORT] or unix:PATH", url);
        return NULL;
    }
    struct timeval tv = {.tv_sec = 10};
    redisContext *c;
    if (!strncmp(url, "unix:", 5)) {
        c = redisConnectUnixWithTimeout(url + 5, tv);
    } else {
        char host[256];
        const char *h = url + 8, *colon = strchr(h, ':');
        size_t n = colon ? (size_t)(colon - h) : strlen(h);
        snprintf(host, sizeof host, "%.*s", (int)(n < sizeof host ? n : sizeof host - 1), h);
        c = redisConnectWithTimeout(host, colon ? atoi(colon + 1) : 6379, tv);
    }
    if (!c || c->err) {
        snprintf(err, err_size, "%s: %s", url, c ? c->errstr : "cannot allocate a Redis context");
        redisFree(c);
        return NULL;
    }
    return c;
}
