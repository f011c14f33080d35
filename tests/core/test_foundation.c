/* Registry, values and graph builder basics. */
#include "test.h"
#include "core/graph.h"
#include "core/hash.h"
#include "core/value.h"
#include <stdlib.h>
#include <string.h>

static void test_registry_sorted_unique(void)
{
    size_t n = sd_node_type_count();
    CHECK(n > 0);
    for (size_t i = 1; i < n; i++)
        CHECK_MSG(strcmp(sd_node_type_at(i - 1)->name, sd_node_type_at(i)->name) < 0,
                  "registry not sorted/unique at %s", sd_node_type_at(i)->name);
    for (size_t i = 0; i < n; i++) {
        const sd_node_desc *d = sd_node_type_at(i);
        CHECK(sd_node_type_find(d->name) == d);
        CHECK(d->run != NULL);
        CHECK(d->version >= 1);
        for (size_t j = 0; j < d->n_inputs; j++) {
            const sd_input_desc *in = &d->inputs[j];
            CHECK_MSG(in->doc && *in->doc, "%s.%s has no doc", d->name, in->name);
            char msg[256];
            if (in->def)
                CHECK_MSG(sd_literal_check(in, in->def, msg, sizeof msg), "%s.%s default: %s", d->name,
                          in->name, msg);
        }
    }
    CHECK(sd_node_type_find("NoSuchNode") == NULL);
}

static void test_value_roundtrip(void)
{
    sd_value *v = sd_value_new(SD_TYPE_LATENT);
    int64_t shape[4] = {1, 4, 3, 5};
    sd_tensor *t = sd_value_add_tensor(v, "samples", 4, shape);
    for (int i = 0; i < 60; i++)
        t->data[i] = (float)i * 0.25f - 3.0f;
    v->attrs = json_pack("{s:f}", "strength", 0.5);
    unsigned char *buf;
    size_t len;
    CHECK_EQ_INT(sd_value_serialize(v, &buf, &len), SD_OK);
    sd_value *w = NULL;
    CHECK_EQ_INT(sd_value_deserialize(buf, len, &w), SD_OK);
    sd_tensor *u = w ? sd_value_tensor(w, "samples") : NULL;
    CHECK(u && u->ndim == 4 && u->shape[3] == 5 && memcmp(u->data, t->data, 60 * sizeof(float)) == 0);
    CHECK(w && json_real_value(json_object_get(w->attrs, "strength")) == 0.5);
    for (size_t cut = 0; cut < len; cut += 7) {
        sd_value *bad = NULL;
        CHECK(sd_value_deserialize(buf, cut, &bad) == SD_ERR_PARSE && bad == NULL);
    }
    free(buf);
    sd_value_unref(w);
    sd_value_unref(v);
    int64_t huge[3] = {INT64_MAX / 2, 4, 4};
    sd_value *h = sd_value_new(SD_TYPE_IMAGE);
    CHECK(sd_value_add_tensor(h, "image", 3, huge) == NULL);
    sd_value_unref(h);
}

static void test_graph_builder(void)
{
    sd_context *ctx;
    sd_graph *g;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    const char *id;
    CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveInt", NULL, &id), SD_OK);
    CHECK_STR_EQ(id, "1");
    CHECK_EQ_INT(sd_graph_set_input(g, "1", "value", "12"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "1", "value", "x"), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "not an integer");
    CHECK_EQ_INT(sd_graph_set_input(g, "1", "nope", "1"), SD_ERR_NOT_FOUND);
    CHECK_EQ_INT(sd_graph_add_node(g, "Bogus", NULL, NULL), SD_ERR_NOT_FOUND);
    CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveInt", "1", NULL), SD_ERR_INVALID);
    CHECK_EQ_INT(sd_graph_add_param(g, "n", "INT", "3", "count"), SD_OK);
    CHECK_EQ_INT(sd_graph_bind_param(g, "n", "1", "value"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "n", "zz"), SD_ERR_INVALID);
    CHECK_EQ_INT(sd_graph_set_param(g, "n", "9"), SD_OK);
    sd_graph_node *n = sd_graph_find_node(g, "1");
    CHECK_STR_EQ(sd_graph_input_text(g, n, sd_node_desc_input(n->desc, "value")), "9");
    sd_graph *c;
    CHECK_EQ_INT(sd_graph_clone(g, &c), SD_OK);
    CHECK_EQ_INT(sd_graph_node_count(c), 1);
    sd_graph_free(c);
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* Messages quoting input (tensor names, libxml2 text) stay one line (found by fuzz_xml). */
static void test_error_one_line(void)
{
    sd_context *ctx;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    CHECK_EQ_INT(sd_set_error(ctx, SD_ERR_PARSE, "f: tensor '%s'", "a\nb\r\tc\x7f"), SD_ERR_PARSE);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "f: tensor 'a b  c '");
    sd_error_prefix(ctx, "x%s", "\n");
    CHECK_STR_EQ(sd_context_errmsg(ctx), "x : f: tensor 'a b  c '");
    sd_diag_add(ctx, "d\n%s", "e\n");
    CHECK_STR_EQ(sd_context_diag(ctx, 0), "d e ");
    sd_context_free(ctx);
}

static void test_hash(void)
{
    sd_key a, b;
    sd_hash_bytes("abc", 3, &a);
    char hex[65];
    sd_key_hex(&a, hex);
    /* BLAKE2b-256("abc") */
    CHECK_STR_EQ(hex, "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
    CHECK(sd_key_from_hex(hex, &b) && memcmp(a.b, b.b, 32) == 0);
}

int main(void)
{
    RUN(test_registry_sorted_unique);
    RUN(test_value_roundtrip);
    RUN(test_graph_builder);
    RUN(test_error_one_line);
    RUN(test_hash);
    return test_summary("test_foundation");
}
