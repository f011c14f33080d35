/* The server's network-free parsers (server/parse.c): multipart bodies, names under a
 * directory, Origin against Host, bearer tokens, PNG sizes. */
#include "test.h"
#include "server/parse.h"
#include <stdlib.h>

static const char *parse(const char *ct, const char *body, sd_multipart *mp)
{
    return sd_multipart_parse(ct, (const unsigned char *)body, strlen(body), mp);
}

static void test_multipart(void)
{
    sd_multipart mp;
    const char *ct = "multipart/form-data; boundary=XyZ";
    const char *body = "--XyZ\r\n"
                       "Content-Disposition: form-data; name=\"image\"; filename=\"a b.png\"\r\n"
                       "Content-Type: image/png\r\n\r\n"
                       "PNG\r\n--X not yet\r\n"
                       "--XyZ\r\n"
                       "Content-Disposition: form-data; name=type\r\n\r\n"
                       "input\r\n"
                       "--XyZ--\r\n";
    CHECK(parse(ct, body, &mp) == NULL);
    CHECK_EQ_INT(mp.n, 2);
    const sd_mp_part *img = sd_multipart_get(&mp, "image");
    CHECK(img && img->has_filename);
    CHECK_STR_EQ(img ? img->filename : NULL, "a b.png");
    CHECK(img && img->len == strlen("PNG\r\n--X not yet") && !memcmp(img->data, "PNG\r\n--X not yet", img->len));
    const sd_mp_part *t = sd_multipart_get(&mp, "type");
    CHECK(t && !t->has_filename && t->len == 5 && !memcmp(t->data, "input", 5));
    CHECK(sd_multipart_get(&mp, "missing") == NULL);
    /* Quoted boundary, preamble before the first delimiter. */
    CHECK(parse("multipart/form-data; boundary=\"q q\"", "junk\r\n--q q\r\nContent-Disposition: form-data; "
                "name=\"x\"\r\n\r\n1\r\n--q q--", &mp) == NULL);
    CHECK_EQ_INT(mp.n, 1);
    /* Malformed bodies each have a reason. */
    CHECK(parse("application/json", body, &mp) != NULL);
    CHECK(parse("multipart/form-data", body, &mp) != NULL);
    CHECK(parse(ct, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end", &mp) != NULL);
    CHECK(parse(ct, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"", &mp) != NULL);
    CHECK(parse(ct, "--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--", &mp) != NULL);
    CHECK(parse(ct, "--XyZ\r\nContent-Disposition: form-data; name=\"unterminated\r\n\r\nx\r\n--XyZ--", &mp) != NULL);
    CHECK(parse(ct, "nothing here", &mp) != NULL);
    /* Empty names and control characters in names (fuzz_server finding). */
    CHECK(parse(ct, "--XyZ\r\nContent-Disposition: form-data; name=\"\"\r\n\r\nx\r\n--XyZ--", &mp) != NULL);
    const char nul[] = "--XyZ\r\nContent-Disposition: form-data; name=\0x\r\n\r\nx\r\n--XyZ--";
    CHECK(sd_multipart_parse(ct, (const unsigned char *)nul, sizeof nul - 1, &mp) != NULL);
    CHECK(parse(ct, "--XyZ\r\nContent-Disposition: form-data; name=\"a\x01\"\r\n\r\nx\r\n--XyZ--", &mp) != NULL);
    CHECK(parse(ct, "--XyZ\r\nContent-Disposition: form-data; name=a; filename=\"b\x1b.png\"\r\n\r\nx\r\n--XyZ--", &mp) != NULL);
    CHECK(parse(ct, "--XyZx", &mp) != NULL);
    char many[4096] = "";
    for (int i = 0; i <= SD_MP_MAX_PARTS; i++)
        strcat(many, "--XyZ\r\nContent-Disposition: form-data; name=\"p\"\r\n\r\nv\r\n");
    strcat(many, "--XyZ--");
    CHECK(parse(ct, many, &mp) != NULL);
}

static void test_paths(void)
{
    CHECK(sd_relpath_ok("a.png", false));
    CHECK(sd_relpath_ok("sub/dir/a.png", false));
    CHECK(sd_relpath_ok("", true));
    CHECK(!sd_relpath_ok("", false));
    CHECK(!sd_relpath_ok("/etc/passwd", false));
    CHECK(!sd_relpath_ok("../x", false));
    CHECK(!sd_relpath_ok("a/../../x", false));
    CHECK(!sd_relpath_ok("a/..", false));
    CHECK(!sd_relpath_ok("./a", false));
    CHECK(!sd_relpath_ok("a//b", false));
    CHECK(!sd_relpath_ok("a/", false));
    CHECK(!sd_relpath_ok("a\\..\\b", false));
    CHECK(!sd_relpath_ok("a\nb", false));
    CHECK(sd_relpath_ok("..a", false));
    CHECK(sd_filename_ok("img (1).png"));
    CHECK(!sd_filename_ok("sub/a.png"));
    CHECK(!sd_filename_ok(".hidden"));
    CHECK(!sd_filename_ok(".."));
}

static void test_origin_and_token(void)
{
    CHECK(sd_origin_allowed(NULL, "127.0.0.1:8188"));
    CHECK(sd_origin_allowed("http://127.0.0.1:8188", "127.0.0.1:8188"));
    CHECK(sd_origin_allowed("http://LOCALHOST:8188/", "localhost:8188"));
    CHECK(!sd_origin_allowed("http://evil.example", "127.0.0.1:8188"));
    CHECK(!sd_origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8188"));
    CHECK(!sd_origin_allowed("http://127.0.0.1:8188.evil", "127.0.0.1:8188"));
    CHECK(!sd_origin_allowed("null", "127.0.0.1:8188"));
    CHECK(!sd_origin_allowed("http://127.0.0.1:8188", NULL));
    CHECK(sd_host_is_loopback("127.0.0.1:8188"));
    CHECK(sd_host_is_loopback("127.1.2.3"));
    CHECK(sd_host_is_loopback("LOCALHOST:80"));
    CHECK(sd_host_is_loopback("[::1]:8188"));
    CHECK(!sd_host_is_loopback("evil.example:8188"));
    CHECK(!sd_host_is_loopback("127.0.0.1.evil.example"));
    CHECK(!sd_host_is_loopback("localhost.evil.example:8188"));
    CHECK(!sd_host_is_loopback("127.0.0.1:"));
    CHECK(!sd_host_is_loopback("127.0.0.1:8188x"));
    CHECK(!sd_host_is_loopback("10.0.0.1:8188"));
    CHECK(!sd_host_is_loopback("127..0.1"));
    CHECK(!sd_host_is_loopback("[::2]:8188"));
    CHECK(!sd_host_is_loopback(NULL));
    CHECK(sd_bearer_ok("Bearer s3cret", "s3cret"));
    CHECK(sd_bearer_ok("bearer s3cret", "s3cret"));
    CHECK(!sd_bearer_ok("Bearer s3cre", "s3cret"));
    CHECK(!sd_bearer_ok("Bearer s3cretx", "s3cret"));
    CHECK(!sd_bearer_ok("Basic s3cret", "s3cret"));
    CHECK(!sd_bearer_ok(NULL, "s3cret"));
}

static void test_png_size(void)
{
    unsigned char h[24] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                           0, 0, 1, 0, 0, 0, 0, 64};
    uint32_t w, ht;
    CHECK(sd_png_size(h, sizeof h, &w, &ht));
    CHECK_EQ_INT(w, 256);
    CHECK_EQ_INT(ht, 64);
    CHECK(!sd_png_size(h, 23, &w, &ht));
    h[1] = 'X';
    CHECK(!sd_png_size(h, sizeof h, &w, &ht));
}

int main(void)
{
    RUN(test_multipart);
    RUN(test_paths);
    RUN(test_origin_and_token);
    RUN(test_png_size);
    return test_summary("test_server_parse");
}
