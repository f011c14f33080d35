/* The restricted unpickler and torch's zip checkpoint format (see pickle.h). The interpreter
 * keeps every value in one arena freed at the end; containers hold pointers to values. */
#include "ml/formats/pickle.h"
#include "core/checked.h"
#include <stdio.h>
#include <zlib.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STACK (1u << 20) /* values on the stack and in the memo */

typedef enum {
    V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_TUPLE, V_LIST, V_DICT, V_GLOBAL, V_STORAGE, V_TENSOR, V_OBJECT, V_MARK
} vkind;

/* The callables the allowlist admits. */
typedef enum {
    G_ORDERED_DICT, G_REBUILD_TENSOR, G_REBUILD_PARAMETER, G_STORAGE, G_NUMPY_SCALAR, G_NUMPY_DTYPE, G_CODECS_ENCODE,
    G_SET, G_SLICE, G_OPAQUE
} gkind;

typedef struct value value;
struct value {
    vkind kind;
    int64_t i;          /* BOOL, INT; STORAGE: numel */
    double f;
    char *s;            /* STR (bytes too), NUL-terminated; STORAGE: key */
    size_t len;
    value **items;      /* TUPLE, LIST; DICT: keys and values interleaved */
    size_t n, cap;
    gkind g;            /* GLOBAL */
    sd_st_dtype dtype;  /* GLOBAL of G_STORAGE, STORAGE, TENSOR */
    value *storage;     /* TENSOR */
    int64_t offset;     /* TENSOR, in elements */
    int ndim;           /* TENSOR */
    int64_t shape[SD_ST_MAX_DIMS];
    int64_t stride[SD_ST_MAX_DIMS]; /* TENSOR, in elements */
    bool strided;       /* TENSOR: not laid out contiguously */
    value *next;        /* arena */
};

typedef struct vm {
    sd_context *ctx;
    const char *source;
    const unsigned char *p, *end;
    value *arena;
    value **stack;
    size_t sp, stack_cap;
    value **memo;
    size_t memo_cap;
    value *marks; /* the MARK sentinel */
} vm;

static sd_status fail(vm *m, sd_status st, const char *what)
{
    return sd_set_error(m->ctx, st, "%s: %s", m->source, what);
}

static value *new_value(vm *m, vkind kind)
{
    value *v = calloc(1, sizeof *v);
    if (v) {
        v->kind = kind;
        v->next = m->arena;
        m->arena = v;
    }
    return v;
}

static sd_status push(vm *m, value *v)
{
    if (!v)
        return fail(m, SD_ERR_NOMEM, "out of memory");
    if (m->sp == m->stack_cap) {
        if (m->stack_cap >= MAX_STACK)
            return fail(m, SD_ERR_LIMIT, "pickle stack deeper than 1048576 values");
        size_t cap = m->stack_cap ? m->stack_cap * 2 : 64;
        value **s = realloc(m->stack, cap * sizeof *s);
        if (!s)
            return fail(m, SD_ERR_NOMEM, "out of memory");
        m->stack = s;
        m->stack_cap = cap;
    }
    m->stack[m->sp++] = v;
    return SD_OK;
}

static value *pop(vm *m)
{
    return m->sp && m->stack[m->sp - 1]->kind != V_MARK ? m->stack[--m->sp] : NULL;
}

static value *top(vm *m)
{
    return m->sp && m->stack[m->sp - 1]->kind != V_MARK ? m->stack[m->sp - 1] : NULL;
}

static sd_status append_item(vm *m, value *c, value *v)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 4;
        value **items = realloc(c->items, cap * sizeof *items);
        if (!items)
            return fail(m, SD_ERR_NOMEM, "out of memory");
        c->items = items;
        c->cap = cap;
    }
    c->items[c->n++] = v;
    return SD_OK;
}

/* The values above the topmost MARK, which is removed; false when there is no MARK. */
static bool pop_mark(vm *m, value ***items, size_t *n)
{
    size_t k = m->sp;
    while (k > 0 && m->stack[k - 1]->kind != V_MARK)
        k--;
    if (k == 0)
        return false;
    *items = m->stack + k;
    *n = m->sp - k;
    m->sp = k - 1;
    return true;
}

static bool take(vm *m, size_t n, const unsigned char **out)
{
    if ((size_t)(m->end - m->p) < n)
        return false;
    *out = m->p;
    m->p += n;
    return true;
}

static uint64_t le(const unsigned char *b, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | b[i];
    return v;
}

static value *new_str(vm *m, const unsigned char *b, size_t n)
{
    value *v = new_value(m, V_STR);
    if (v && !(v->s = malloc(n + 1)))
        return NULL;
    if (v) {
        memcpy(v->s, b, n);
        v->s[n] = '\0';
        v->len = n;
    }
    return v;
}

/* A line (protocol 0 text argument) without its newline. */
static bool line(vm *m, const unsigned char **s, size_t *n)
{
    const unsigned char *nl = memchr(m->p, '\n', (size_t)(m->end - m->p));
    if (!nl)
        return false;
    *s = m->p;
    *n = (size_t)(nl - m->p);
    m->p = nl + 1;
    return true;
}

/* ---- The allowlist. ---- */

static const struct {
    const char *module, *name;
    gkind g;
    sd_st_dtype dtype;
} allowed[] = {
    {"collections", "OrderedDict", G_ORDERED_DICT, 0},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR, 0},
    {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAMETER, 0},
    {"torch", "FloatStorage", G_STORAGE, SD_ST_F32},
    {"torch", "HalfStorage", G_STORAGE, SD_ST_F16},
    {"torch", "BFloat16Storage", G_STORAGE, SD_ST_BF16},
    {"torch", "DoubleStorage", G_STORAGE, SD_ST_F64},
    {"torch", "LongStorage", G_STORAGE, SD_ST_I64},
    {"torch", "IntStorage", G_STORAGE, SD_ST_I32},
    {"torch", "ShortStorage", G_STORAGE, SD_ST_I16},
    {"torch", "CharStorage", G_STORAGE, SD_ST_I8},
    {"torch", "ByteStorage", G_STORAGE, SD_ST_U8},
    {"torch", "BoolStorage", G_STORAGE, SD_ST_BOOL},
    {"numpy.core.multiarray", "scalar", G_NUMPY_SCALAR, 0},
    {"numpy._core.multiarray", "scalar", G_NUMPY_SCALAR, 0},
    {"numpy", "dtype", G_NUMPY_DTYPE, 0},
    {"_codecs", "encode", G_CODECS_ENCODE, 0},
    {"builtins", "set", G_SET, 0},
    {"builtins", "frozenset", G_SET, 0},
    {"builtins", "slice", G_SLICE, 0},
    {"pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint", G_OPAQUE, 0},
    {"torch", "Size", G_SET, 0},
};

static sd_status global(vm *m, const char *module, size_t mlen, const char *name, size_t nlen)
{
    for (size_t i = 0; i < sizeof allowed / sizeof *allowed; i++)
        if (strlen(allowed[i].module) == mlen && !memcmp(allowed[i].module, module, mlen) &&
            strlen(allowed[i].name) == nlen && !memcmp(allowed[i].name, name, nlen)) {
            value *v = new_value(m, V_GLOBAL);
            if (v) {
                v->g = allowed[i].g;
                v->dtype = allowed[i].dtype;
            }
            return push(m, v);
        }
    /* The name is printed with its control characters replaced, so the message stays one line. */
    char shown[160];
    int k = snprintf(shown, sizeof shown, "%.*s.%.*s", (int)(mlen > 70 ? 70 : mlen), module,
                     (int)(nlen > 70 ? 70 : nlen), name);
    for (int i = 0; i < k && i < (int)sizeof shown; i++)
        if ((unsigned char)shown[i] < 0x20 || shown[i] == 0x7f)
            shown[i] = '?';
    return sd_set_error(m->ctx, SD_ERR_INVALID, "%s: forbidden global %s", m->source, shown);
}

/* ---- Calls of allowed globals (REDUCE, NEWOBJ). ---- */

static bool int_at(const value *t, size_t i, int64_t *v)
{
    if (!t || i >= t->n || (t->items[i]->kind != V_INT && t->items[i]->kind != V_BOOL))
        return false;
    *v = t->items[i]->i;
    return true;
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]). */
static sd_status rebuild_tensor(vm *m, const value *args)
{
    const value *st = args->n >= 4 ? args->items[0] : NULL, *size = st ? args->items[2] : NULL,
                *stride = st ? args->items[3] : NULL;
    int64_t offset;
    if (!st || st->kind != V_STORAGE || !int_at(args, 1, &offset) || size->kind != V_TUPLE ||
        stride->kind != V_TUPLE || size->n != stride->n || size->n > SD_ST_MAX_DIMS)
        return fail(m, SD_ERR_PARSE, "malformed _rebuild_tensor_v2 arguments");
    value *t = new_value(m, V_TENSOR);
    if (!t)
        return fail(m, SD_ERR_NOMEM, "out of memory");
    t->storage = (value *)st;
    t->dtype = st->dtype;
    t->offset = offset;
    t->ndim = (int)size->n;
    int64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        int64_t n, s;
        if (!int_at(size, (size_t)d, &n) || !int_at(stride, (size_t)d, &s) || n < 0 || s < 0 || offset < 0)
            return fail(m, SD_ERR_PARSE, "malformed tensor size or stride");
        t->strided |= n > 1 && s != expect;
        t->shape[d] = n;
        t->stride[d] = s;
        if (n && expect > INT64_MAX / n)
            return fail(m, SD_ERR_LIMIT, "tensor size overflows");
        expect *= n > 0 ? n : 1;
    }
    return push(m, t);
}

static sd_status call(vm *m, const value *fn, const value *args)
{
    if (!fn || fn->kind != V_GLOBAL || !args || args->kind != V_TUPLE)
        return fail(m, SD_ERR_PARSE, "a call of something that is not an allowed global");
    switch (fn->g) {
    case G_ORDERED_DICT: return push(m, new_value(m, V_DICT));
    case G_REBUILD_TENSOR: return rebuild_tensor(m, args);
    case G_REBUILD_PARAMETER:
        if (args->n < 1)
            return fail(m, SD_ERR_PARSE, "malformed _rebuild_parameter arguments");
        return push(m, args->items[0]);
    case G_CODECS_ENCODE:
        if (args->n < 1 || args->items[0]->kind != V_STR)
            return fail(m, SD_ERR_PARSE, "malformed _codecs.encode arguments");
        return push(m, args->items[0]);
    default: return push(m, new_value(m, V_OBJECT)); /* scalars, dtypes, sets, callback state */
    }
}

/* BINPERSID: ("storage", StorageType, key, location, numel). */
static sd_status persistent_load(vm *m, const value *pid)
{
    int64_t numel;
    if (!pid || pid->kind != V_TUPLE || pid->n < 5 || pid->items[0]->kind != V_STR ||
        strcmp(pid->items[0]->s, "storage") || pid->items[1]->kind != V_GLOBAL || pid->items[1]->g != G_STORAGE ||
        pid->items[2]->kind != V_STR || !int_at(pid, 4, &numel) || numel < 0)
        return fail(m, SD_ERR_PARSE, "malformed persistent id (expected a torch storage)");
    value *v = new_value(m, V_STORAGE);
    if (v) {
        v->dtype = pid->items[1]->dtype;
        v->s = pid->items[2]->s;
        v->i = numel;
    }
    return push(m, v);
}

/* ---- The interpreter. ---- */

static sd_status memo_put(vm *m, uint64_t idx, value *v)
{
    if (!v || idx >= MAX_STACK)
        return fail(m, v ? SD_ERR_LIMIT : SD_ERR_PARSE, v ? "pickle memo index too large" : "memo of an empty stack");
    if (idx >= m->memo_cap) {
        size_t cap = m->memo_cap ? m->memo_cap : 64;
        while (cap <= idx)
            cap *= 2;
        value **mm = realloc(m->memo, cap * sizeof *mm);
        if (!mm)
            return fail(m, SD_ERR_NOMEM, "out of memory");
        memset(mm + m->memo_cap, 0, (cap - m->memo_cap) * sizeof *mm);
        m->memo = mm;
        m->memo_cap = cap;
    }
    m->memo[idx] = v;
    return SD_OK;
}

static sd_status memo_get(vm *m, uint64_t idx)
{
    if (idx >= m->memo_cap || !m->memo[idx])
        return fail(m, SD_ERR_PARSE, "memo entry read before it was written");
    return push(m, m->memo[idx]);
}

static size_t memo_next(const vm *m)
{
    size_t n = m->memo_cap;
    while (n > 0 && !m->memo[n - 1])
        n--;
    return n;
}

static sd_status make_seq(vm *m, vkind kind, value **items, size_t n)
{
    value *v = new_value(m, kind);
    if (!v)
        return fail(m, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        if (append_item(m, v, items[i]))
            return SD_ERR_NOMEM;
    return push(m, v);
}

static sd_status set_items(vm *m, value *d, value **items, size_t n)
{
    if (!d || d->kind != V_DICT || n % 2)
        return fail(m, SD_ERR_PARSE, "SETITEMS on something that is not a dict");
    for (size_t i = 0; i < n; i++)
        if (append_item(m, d, items[i]))
            return SD_ERR_NOMEM;
    return SD_OK;
}

/* One opcode; *stop set at STOP. */
static sd_status step(vm *m, bool *stop)
{
    const unsigned char *b;
    value **items, *a, *c;
    size_t n;
    if (!take(m, 1, &b))
        return fail(m, SD_ERR_PARSE, "truncated pickle (no STOP)");
    unsigned char op = b[0];
    switch (op) {
    case 0x80: return take(m, 1, &b) ? SD_OK : fail(m, SD_ERR_PARSE, "truncated PROTO");        /* PROTO */
    case 0x95: return take(m, 8, &b) ? SD_OK : fail(m, SD_ERR_PARSE, "truncated FRAME");        /* FRAME */
    case '.': *stop = true; return SD_OK;                                                      /* STOP */
    case '(': return push(m, m->marks);                                                        /* MARK */
    case 'N': return push(m, new_value(m, V_NONE));
    case 0x88: case 0x89:                                                                      /* NEWTRUE, NEWFALSE */
        if ((a = new_value(m, V_BOOL)))
            a->i = op == 0x88;
        return push(m, a);
    case 'J': case 'K': case 'M':                                                              /* BININT, 1, 2 */
        if (!take(m, op == 'J' ? 4 : op == 'K' ? 1 : 2, &b))
            return fail(m, SD_ERR_PARSE, "truncated integer");
        if ((a = new_value(m, V_INT)))
            a->i = op == 'J' ? (int32_t)le(b, 4) : (int64_t)le(b, op == 'K' ? 1 : 2);
        return push(m, a);
    case 0x8a: {                                                                               /* LONG1 */
        if (!take(m, 1, &b) || !take(m, b[0], &b))
            return fail(m, SD_ERR_PARSE, "truncated LONG1");
        size_t k = (size_t)(m->p - b);
        if (k > 8) /* beyond 64 bits (the legacy format's magic number): kept opaque */
            return push(m, new_value(m, V_OBJECT));
        uint64_t u = k ? le(b, (int)k) : 0;
        if (k && k < 8 && (b[k - 1] & 0x80))
            u |= ~0ull << (8 * k);
        if ((a = new_value(m, V_INT)))
            memcpy(&a->i, &u, sizeof u);
        return push(m, a);
    }
    case 'G':                                                                                  /* BINFLOAT */
        if (!take(m, 8, &b))
            return fail(m, SD_ERR_PARSE, "truncated float");
        if ((a = new_value(m, V_FLOAT))) {
            uint64_t u = 0;
            for (int i = 0; i < 8; i++)
                u = u << 8 | b[i];
            memcpy(&a->f, &u, sizeof u);
        }
        return push(m, a);
    case 'X': case 0x8c: case 0x8d: case 'U': case 'T': case 'B': case 'C': case 0x8e: {       /* strings, bytes */
        int w = op == 0x8c || op == 'U' || op == 'C' ? 1 : op == 0x8d || op == 0x8e ? 8 : 4;
        if (!take(m, (size_t)w, &b))
            return fail(m, SD_ERR_PARSE, "truncated string length");
        uint64_t len = le(b, w);
        if (len > (uint64_t)(m->end - m->p) || !take(m, (size_t)len, &b))
            return fail(m, SD_ERR_PARSE, "string runs past the end of the pickle");
        return push(m, new_str(m, b, (size_t)len));
    }
    case ')': return push(m, new_value(m, V_TUPLE));                                           /* EMPTY_TUPLE */
    case ']': return push(m, new_value(m, V_LIST));                                            /* EMPTY_LIST */
    case '}': return push(m, new_value(m, V_DICT));                                            /* EMPTY_DICT */
    case 0x8f: return push(m, new_value(m, V_OBJECT));                                         /* EMPTY_SET */
    case 't': case 'l': case 0x91:                                                             /* TUPLE, LIST, FROZENSET */
        if (!pop_mark(m, &items, &n))
            return fail(m, SD_ERR_PARSE, "no MARK");
        return op == 0x91 ? push(m, new_value(m, V_OBJECT)) : make_seq(m, op == 't' ? V_TUPLE : V_LIST, items, n);
    case 0x85: case 0x86: case 0x87:                                                           /* TUPLE1, 2, 3 */
        n = (size_t)(op - 0x84);
        if (m->sp < n)
            return fail(m, SD_ERR_PARSE, "stack underflow");
        for (size_t i = m->sp - n; i < m->sp; i++)
            if (m->stack[i]->kind == V_MARK)
                return fail(m, SD_ERR_PARSE, "stack underflow");
        m->sp -= n;
        return make_seq(m, V_TUPLE, m->stack + m->sp, n);
    case 'd':                                                                                  /* DICT */
        if (!pop_mark(m, &items, &n))
            return fail(m, SD_ERR_PARSE, "no MARK");
        if (!(a = new_value(m, V_DICT)))
            return fail(m, SD_ERR_NOMEM, "out of memory");
        return set_items(m, a, items, n) ? SD_ERR_PARSE : push(m, a);
    case 'a':                                                                                  /* APPEND */
        a = pop(m);
        c = top(m);
        if (!a || !c || c->kind != V_LIST)
            return fail(m, SD_ERR_PARSE, "APPEND to something that is not a list");
        return append_item(m, c, a);
    case 'e': case 0x90:                                                                       /* APPENDS, ADDITEMS */
        if (!pop_mark(m, &items, &n) || !(c = top(m)) || (op == 'e' && c->kind != V_LIST))
            return fail(m, SD_ERR_PARSE, "APPENDS to something that is not a list");
        for (size_t i = 0; op == 'e' && i < n; i++)
            if (append_item(m, c, items[i]))
                return SD_ERR_NOMEM;
        return SD_OK;
    case 's':                                                                                  /* SETITEM */
        if (m->sp < 3)
            return fail(m, SD_ERR_PARSE, "stack underflow");
        a = pop(m);
        c = pop(m);
        if (!a || !c)
            return fail(m, SD_ERR_PARSE, "stack underflow");
        {
            value *kv[2] = {c, a};
            return set_items(m, top(m), kv, 2);
        }
    case 'u':                                                                                  /* SETITEMS */
        if (!pop_mark(m, &items, &n))
            return fail(m, SD_ERR_PARSE, "no MARK");
        return set_items(m, top(m), items, n);
    case 'S': {                                                                                /* STRING (quoted line) */
        const unsigned char *s;
        if (!line(m, &s, &n) || n < 2 || (s[0] != '\'' && s[0] != '"') || s[n - 1] != s[0])
            return fail(m, SD_ERR_PARSE, "malformed STRING");
        return push(m, new_str(m, s + 1, n - 2));
    }
    case 'p': case 'g': {                                                                      /* PUT, GET (text) */
        const unsigned char *s;
        char num[24];
        if (!line(m, &s, &n) || n == 0 || n >= sizeof num)
            return fail(m, SD_ERR_PARSE, "malformed PUT or GET");
        memcpy(num, s, n);
        num[n] = '\0';
        char *end;
        unsigned long long idx = strtoull(num, &end, 10);
        if (*end)
            return fail(m, SD_ERR_PARSE, "malformed PUT or GET");
        return op == 'p' ? memo_put(m, idx, top(m)) : memo_get(m, idx);
    }
    case 'q': case 'r': case 'h': case 'j':                                                    /* BINPUT, LONG_, BINGET, LONG_ */
        if (!take(m, op == 'q' || op == 'h' ? 1 : 4, &b))
            return fail(m, SD_ERR_PARSE, "truncated memo index");
        n = (size_t)le(b, op == 'q' || op == 'h' ? 1 : 4);
        return op == 'q' || op == 'r' ? memo_put(m, n, top(m)) : memo_get(m, n);
    case 0x94: return memo_put(m, memo_next(m), top(m));                                      /* MEMOIZE */
    case '0': return pop(m) ? SD_OK : fail(m, SD_ERR_PARSE, "POP of an empty stack");          /* POP */
    case '2': return top(m) ? push(m, top(m)) : fail(m, SD_ERR_PARSE, "DUP of an empty stack"); /* DUP */
    case '1': return pop_mark(m, &items, &n) ? SD_OK : fail(m, SD_ERR_PARSE, "no MARK");       /* POP_MARK */
    case 'c': {                                                                                /* GLOBAL */
        const unsigned char *mod, *name;
        size_t ml, nl;
        if (!line(m, &mod, &ml) || !line(m, &name, &nl))
            return fail(m, SD_ERR_PARSE, "truncated GLOBAL");
        return global(m, (const char *)mod, ml, (const char *)name, nl);
    }
    case 0x93:                                                                                 /* STACK_GLOBAL */
        a = pop(m);
        c = pop(m);
        if (!a || !c || a->kind != V_STR || c->kind != V_STR)
            return fail(m, SD_ERR_PARSE, "STACK_GLOBAL needs two strings");
        return global(m, c->s, c->len, a->s, a->len);
    case 'R': case 0x81:                                                                       /* REDUCE, NEWOBJ */
        a = pop(m);
        c = pop(m);
        return call(m, c, a);
    case 0x92:                                                                                 /* NEWOBJ_EX */
        pop(m);
        a = pop(m);
        c = pop(m);
        return call(m, c, a);
    case 'b':                                                                                  /* BUILD: state ignored */
        return pop(m) && top(m) ? SD_OK : fail(m, SD_ERR_PARSE, "BUILD on an empty stack");
    case 'Q':                                                                                  /* BINPERSID */
        return persistent_load(m, pop(m));
    case 'i': case 'o':                                                                        /* INST, OBJ */
        if (op == 'i') {
            const unsigned char *mod, *name;
            size_t ml, nl;
            if (!line(m, &mod, &ml) || !line(m, &name, &nl))
                return fail(m, SD_ERR_PARSE, "truncated INST");
            sd_status st = global(m, (const char *)mod, ml, (const char *)name, nl);
            if (st)
                return st;
        }
        return fail(m, SD_ERR_INVALID, "INST and OBJ instantiate classes and are not allowed");
    default: {
        char what[64];
        snprintf(what, sizeof what, "unsupported pickle opcode 0x%02x", op);
        return fail(m, SD_ERR_PARSE, what);
    }
    }
}

/* ---- Collecting the tensors. ---- */

static sd_status add_tensor(vm *m, sd_pickle_tensors *out, const char *name, const value *t)
{
    if (out->n >= SD_PICKLE_MAX_TENSORS)
        return fail(m, SD_ERR_LIMIT, "more than 100000 tensors");
    sd_pickle_tensor *items = realloc(out->items, (out->n + 1) * sizeof *items);
    if (!items)
        return fail(m, SD_ERR_NOMEM, "out of memory");
    out->items = items;
    sd_pickle_tensor *p = &items[out->n];
    *p = (sd_pickle_tensor){.dtype = t->dtype, .ndim = t->ndim, .offset = t->offset, .strided = t->strided,
                            .storage_numel = t->storage->i, .name = sd_strdup(name),
                            .storage = sd_strdup(t->storage->s)};
    memcpy(p->shape, t->shape, sizeof p->shape);
    memcpy(p->stride, t->stride, sizeof p->stride);
    out->n++;
    return p->name && p->storage ? SD_OK : fail(m, SD_ERR_NOMEM, "out of memory");
}

/* Walks dicts from v, naming tensors by their dotted key path. */
static sd_status collect(vm *m, const value *v, const char *prefix, int depth, sd_pickle_tensors *out)
{
    if (depth > SD_PICKLE_MAX_DEPTH)
        return fail(m, SD_ERR_LIMIT, "dicts nested deeper than 256 levels");
    if (v->kind == V_TENSOR)
        return add_tensor(m, out, prefix, v);
    if (v->kind != V_DICT)
        return SD_OK;
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        const value *k = v->items[i];
        if (k->kind != V_STR)
            continue;
        char *name = *prefix ? sd_strfmt("%s.%s", prefix, k->s) : sd_strdup(k->s);
        sd_status st = name ? collect(m, v->items[i + 1], name, depth + 1, out) : fail(m, SD_ERR_NOMEM, "out of memory");
        free(name);
        if (st)
            return st;
    }
    return SD_OK;
}

/* The state dict inside a checkpoint's root dict: its "state_dict" (SD and Lightning
 * checkpoints), else "params_ema", else "params" (Real-ESRGAN and BasicSR upscalers), else the
 * root itself. */
static const value *state_dict(const value *root)
{
    static const char *const keys[] = {"state_dict", "params_ema", "params"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
        for (size_t i = 0; root->kind == V_DICT && i + 1 < root->n; i += 2)
            if (root->items[i]->kind == V_STR && !strcmp(root->items[i]->s, keys[k]) &&
                root->items[i + 1]->kind == V_DICT)
                return root->items[i + 1];
    return root;
}

void sd_pickle_tensors_free(sd_pickle_tensors *t)
{
    for (size_t i = 0; t && i < t->n; i++) {
        free(t->items[i].name);
        free(t->items[i].storage);
    }
    if (t) {
        free(t->items);
        t->items = NULL;
        t->n = 0;
    }
}

/* Runs one pickle from m->p to its STOP; *root is its value (alive until vm_free). Each pickle
 * has its own memo and stack. */
static sd_status run_pickle(vm *m, value **root)
{
    sd_status st = m->marks ? SD_OK : (m->marks = new_value(m, V_MARK)) ? SD_OK : fail(m, SD_ERR_NOMEM, "out of memory");
    m->sp = 0;
    if (m->memo)
        memset(m->memo, 0, m->memo_cap * sizeof *m->memo);
    for (bool stop = false; !st && !stop;)
        st = step(m, &stop);
    *root = st ? NULL : pop(m);
    if (!st && !*root)
        st = fail(m, SD_ERR_PARSE, "the pickle leaves no value");
    return st;
}

static void vm_free(vm *m)
{
    for (value *v = m->arena, *next; v; v = next) {
        next = v->next;
        if (v->kind == V_STR)
            free(v->s);
        free(v->items);
        free(v);
    }
    free(m->stack);
    free(m->memo);
}

sd_status sd_pickle_read(sd_context *ctx, const char *source, const unsigned char *data, size_t len,
                         sd_pickle_tensors *out)
{
    out->items = NULL;
    out->n = 0;
    vm m = {.ctx = ctx, .source = source, .p = data, .end = data + len};
    value *root = NULL;
    sd_status st = run_pickle(&m, &root);
    if (!st)
        st = collect(&m, state_dict(root), "", 0, out);
    vm_free(&m);
    if (st)
        sd_pickle_tensors_free(out);
    return st;
}

/* ---- torch's zip format. ---- */

/* One entry of the zip: its name, where its bytes lie in the file and their size once
 * uncompressed; a deflated entry's compressed size and CRC-32. */
typedef struct zip_entry {
    const char *name;
    size_t name_len;
    uint64_t offset;
    size_t size;
    bool deflated;
    uint64_t csize;
    uint32_t crc;
} zip_entry;

typedef struct zip {
    sd_context *ctx;
    const char *path;
    const sd_torch_reader *r;
    unsigned char *cd; /* the central directory, read; entries' names point into it */
    zip_entry *entries;
    size_t n;
} zip;

static sd_status zip_fail(zip *z, sd_status st, const char *what)
{
    return sd_set_error(z->ctx, st, "%s: %s", z->path, what);
}

/* Reads n bytes at file offset at into a new buffer *out (freed by the caller). */
static sd_status read_new(sd_context *ctx, const char *path, const sd_torch_reader *r, uint64_t at, size_t n,
                          unsigned char **out)
{
    if (!(*out = malloc(n ? n : 1)))
        return sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
    sd_status st = r->read(r->user, at, *out, n);
    if (st) {
        free(*out);
        *out = NULL;
    }
    return st;
}

/* The 64-bit values of a zip64 extra field for the fields that hold 0xffffffff. */
static void zip64_extra(const unsigned char *e, size_t len, uint64_t *usize, uint64_t *csize, uint64_t *offset)
{
    for (size_t i = 0; i + 4 <= len;) {
        size_t id = (size_t)le(e + i, 2), n = (size_t)le(e + i + 2, 2), k = i + 4;
        if (i + 4 + n > len)
            return;
        if (id == 1) {
            uint64_t *fields[3] = {usize, csize, offset};
            for (int f = 0; f < 3; f++)
                if (*fields[f] == 0xffffffffu && k + 8 <= i + 4 + n) {
                    *fields[f] = le(e + k, 8);
                    k += 8;
                }
        }
        i += 4 + n;
    }
}

/* Finds the end of central directory in the file's last 64 KiB + 22 bytes: its count, the
 * central directory's size and offset (zip64 records followed). */
static sd_status zip_eocd(zip *z, uint64_t *count, uint64_t *cd_size, uint64_t *cd_off)
{
    uint64_t size = z->r->size, tail_at = size > 65557 ? size - 65557 : 0;
    size_t tail_n = (size_t)(size - tail_at);
    unsigned char *t = NULL, rec[56];
    sd_status st = read_new(z->ctx, z->path, z->r, tail_at, tail_n, &t);
    if (st)
        return st;
    const unsigned char *eocd = NULL;
    for (size_t k = tail_n >= 22 ? tail_n - 22 : 0; tail_n >= 22; k--) {
        if (le(t + k, 4) == 0x06054b50) {
            eocd = t + k;
            break;
        }
        if (k == 0)
            break;
    }
    if (!eocd) {
        free(t);
        return zip_fail(z, SD_ERR_PARSE, "not a zip file (no end of central directory)");
    }
    *count = le(eocd + 10, 2);
    *cd_size = le(eocd + 12, 4);
    *cd_off = le(eocd + 16, 4);
    size_t at = (size_t)(eocd - t);
    uint64_t z64 = at >= 20 && le(eocd - 20, 4) == 0x07064b50 ? le(eocd - 20 + 8, 8) : UINT64_MAX;
    free(t);
    if (z64 == UINT64_MAX) /* no zip64 locator */
        return SD_OK;
    if (size < 56 || z64 > size - 56 || (st = z->r->read(z->r->user, z64, rec, sizeof rec)))
        return st ? st : zip_fail(z, SD_ERR_PARSE, "corrupt zip64 end of central directory");
    if (le(rec, 4) != 0x06064b50)
        return zip_fail(z, SD_ERR_PARSE, "corrupt zip64 end of central directory");
    *count = le(rec + 32, 8);
    *cd_size = le(rec + 40, 8);
    *cd_off = le(rec + 48, 8);
    return SD_OK;
}

static sd_status zip_read(zip *z)
{
    uint64_t size = z->r->size, count = 0, cd_size = 0, cd_off = 0;
    sd_status st = zip_eocd(z, &count, &cd_size, &cd_off);
    if (st)
        return st;
    if (cd_off > size || cd_size > size - cd_off || count > cd_size / 46)
        return zip_fail(z, SD_ERR_PARSE, "zip central directory outside the file");
    if (cd_size > SD_PICKLE_MAX_BYTES)
        return zip_fail(z, SD_ERR_LIMIT, "zip central directory too large");
    if ((st = read_new(z->ctx, z->path, z->r, cd_off, (size_t)cd_size, &z->cd)))
        return st;
    if (!(z->entries = calloc((size_t)count + 1, sizeof *z->entries)))
        return zip_fail(z, SD_ERR_NOMEM, "out of memory");
    const unsigned char *p = z->cd, *end = p + cd_size;
    for (uint64_t i = 0; i < count; i++) {
        if (end - p < 46 || le(p, 4) != 0x02014b50)
            return zip_fail(z, SD_ERR_PARSE, "corrupt zip central directory");
        size_t nl = (size_t)le(p + 28, 2), el = (size_t)le(p + 30, 2), cl = (size_t)le(p + 32, 2);
        if ((size_t)(end - p) < 46 + nl + el + cl)
            return zip_fail(z, SD_ERR_PARSE, "corrupt zip central directory");
        uint64_t method = le(p + 10, 2), csize = le(p + 20, 4), usize = le(p + 24, 4), off = le(p + 42, 4);
        zip64_extra(p + 46 + nl, el, &usize, &csize, &off);
        unsigned char local[30];
        if (size < 30 || off > size - 30)
            return zip_fail(z, SD_ERR_PARSE, "zip entry's local header outside the file");
        if ((st = z->r->read(z->r->user, off, local, sizeof local)))
            return st;
        if (le(local, 4) != 0x04034b50)
            return zip_fail(z, SD_ERR_PARSE, "zip entry's local header outside the file");
        uint64_t data = off + 30 + le(local + 26, 2) + le(local + 28, 2);
        if (method != 0 && method != 8) {
            char what[96];
            snprintf(what, sizeof what, "zip entry compressed with method %u (only stored and deflated are read)",
                     (unsigned)method);
            return zip_fail(z, SD_ERR_INVALID, what);
        }
        if ((method == 0 && csize != usize) || usize > SIZE_MAX)
            return zip_fail(z, SD_ERR_PARSE, "corrupt zip central directory");
        /* Deflate expands at most 1032-fold: a larger claim is a corrupt (or hostile) entry. */
        if (method == 8 && usize / 1032 > csize + 1)
            return zip_fail(z, SD_ERR_PARSE, "a deflated zip entry claims more bytes than deflate can give");
        if (data > size || csize > size - data)
            return zip_fail(z, SD_ERR_PARSE, "zip entry runs past the end of the file");
        z->entries[z->n++] = (zip_entry){(const char *)p + 46, nl, data, (size_t)usize, method == 8, csize,
                                         (uint32_t)le(p + 16, 4)};
        p += 46 + nl + el + cl;
    }
    return SD_OK;
}

/* The entry named PREFIX + suffix, where PREFIX is the archive's top folder ("archive/"). */
static const zip_entry *zip_find(const zip *z, const char *prefix, size_t plen, const char *suffix)
{
    size_t sl = strlen(suffix);
    for (size_t i = 0; i < z->n; i++)
        if (z->entries[i].name_len == plen + sl && !memcmp(z->entries[i].name, prefix, plen) &&
            !memcmp(z->entries[i].name + plen, suffix, sl))
            return &z->entries[i];
    return NULL;
}

/* Where the storages' bytes are: the zip's entries ARCHIVE/data/KEY, or the legacy format's
 * table. */
typedef struct storages {
    const zip *z;
    const char *prefix;
    size_t plen;
    const zip_entry *table; /* legacy: name = key */
    size_t n_table;
} storages;

static const zip_entry *storage_find(const storages *s, const char *key)
{
    if (s->z) {
        char name[96];
        snprintf(name, sizeof name, "data/%.80s", key);
        return zip_find(s->z, s->prefix, s->plen, name);
    }
    for (size_t i = 0; i < s->n_table; i++)
        if (!strcmp(s->table[i].name, key))
            return &s->table[i];
    return NULL;
}

/* Inflates a deflated entry (raw deflate, streamed from the file) into a new buffer *out of
 * e->size bytes, checked against the entry's size and CRC-32. */
static sd_status inflate_entry(sd_context *ctx, const char *path, const sd_torch_reader *r, const zip_entry *e,
                               unsigned char **out)
{
    enum { CHUNK = 1 << 20 };
    unsigned char *in = malloc(CHUNK), *dst = malloc(e->size ? e->size : 1);
    z_stream zs = {0};
    bool ok = in && dst && inflateInit2(&zs, -MAX_WBITS) == Z_OK;
    if (!ok) {
        free(in);
        free(dst);
        return sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory inflating a zip entry", path);
    }
    sd_status st = SD_OK;
    int rc = Z_OK;
    zs.next_out = dst;
    for (uint64_t done = 0; !st && rc == Z_OK;) {
        uInt n = (uInt)(e->csize - done < CHUNK ? e->csize - done : CHUNK);
        if (!n)
            break;
        if ((st = r->read(r->user, e->offset + done, in, n)))
            break;
        done += n;
        zs.next_in = in;
        zs.avail_in = n;
        while (rc == Z_OK && zs.avail_in) {
            size_t left = e->size - (size_t)zs.total_out;
            zs.avail_out = (uInt)(left < UINT_MAX ? left : UINT_MAX);
            rc = inflate(&zs, Z_NO_FLUSH);
            if (rc == Z_BUF_ERROR || (rc == Z_OK && !zs.avail_out && zs.total_out == e->size && zs.avail_in))
                rc = Z_DATA_ERROR; /* more data than the entry's size */
        }
    }
    bool whole = rc == Z_STREAM_END && zs.total_out == e->size &&
                 (uint32_t)crc32_z(0, dst, e->size) == e->crc;
    inflateEnd(&zs);
    free(in);
    if (!st && !whole)
        st = sd_set_error(ctx, SD_ERR_PARSE, "%s: a deflated zip entry is corrupt (%s)", path,
                          rc == Z_STREAM_END ? "size or CRC-32 mismatch" : "bad deflate data");
    if (st) {
        free(dst);
        return st;
    }
    *out = dst;
    return SD_OK;
}

/* The element offset past the last element a tensor views (0 when it has none); false when it
 * overflows. */
static bool view_end(const sd_pickle_tensor *t, int64_t *end)
{
    int64_t last = t->offset;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] == 0) {
            *end = 0;
            return true;
        }
        int64_t step;
        if (__builtin_mul_overflow(t->shape[d] - 1, t->stride[d], &step) || __builtin_add_overflow(last, step, &last))
            return false;
    }
    return !__builtin_add_overflow(last, 1, end);
}

/* Copies the elements a strided view selects from src (the storage's bytes from element
 * t->offset on) into dst in row-major order. */
static void gather(const sd_pickle_tensor *t, size_t es, const unsigned char *src, unsigned char *dst, size_t numel)
{
    int64_t idx[SD_ST_MAX_DIMS] = {0}, at = 0;
    for (size_t i = 0; i < numel; i++) {
        memcpy(dst + i * es, src + (size_t)at * es, es);
        for (int d = t->ndim - 1; d >= 0; d--) {
            at += t->stride[d];
            if (++idx[d] < t->shape[d])
                break;
            at -= t->stride[d] * t->shape[d];
            idx[d] = 0;
        }
    }
}

/* A storage's bytes in memory, shared by the tensors that view it in turn. */
typedef struct held_entry {
    const zip_entry *e;
    unsigned char *bytes;
} held_entry;

/* The data of a tensor that cannot be read from the file where it lies (its storage is
 * deflated, or it is a strided view): a new contiguous buffer in out->mem. span_end is the
 * element offset past its last element, checked to lie inside the storage. */
static sd_status materialise(sd_context *ctx, const char *path, const sd_torch_reader *r, const zip_entry *e,
                             held_entry *held, const sd_pickle_tensor *t, int64_t span_end, sd_st_tensor *out)
{
    size_t es = sd_st_dtype_size(t->dtype), first = (size_t)t->offset * es, span = (size_t)span_end * es - first;
    unsigned char *dst = malloc(out->nbytes ? out->nbytes : 1), *own = NULL;
    const unsigned char *src;
    sd_status st = dst ? SD_OK : sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
    if (!st && e->deflated && held->e != e) {
        free(held->bytes);
        *held = (held_entry){0};
        if (!(st = inflate_entry(ctx, path, r, e, &held->bytes)))
            held->e = e;
    }
    if (!st && e->deflated)
        src = held->bytes + first;
    else if (!st)
        st = read_new(ctx, path, r, e->offset + first, span, &own), src = own;
    if (st) {
        free(dst);
        return st;
    }
    if (t->strided)
        gather(t, es, src, dst, out->numel);
    else
        memcpy(dst, src, out->nbytes);
    free(own);
    out->mem = dst;
    return SD_OK;
}

static sd_status torch_tensors(sd_context *ctx, const char *path, const sd_torch_reader *r, const storages *s,
                               const sd_pickle_tensors *pt, sd_st_tensor *out)
{
    held_entry held = {0};
    sd_status st = SD_OK;
    for (size_t i = 0; !st && i < pt->n; i++) {
        const sd_pickle_tensor *t = &pt->items[i];
        const zip_entry *e = storage_find(s, t->storage);
        size_t es = sd_st_dtype_size(t->dtype), nbytes, start, need;
        int64_t end = 0;
        if (!e) {
            st = sd_set_error(ctx, SD_ERR_PARSE, "%s: tensor '%s': no storage '%s' in the file", path, t->name,
                              t->storage);
            break;
        }
        if (!sd_shape_bytes(t->shape, t->ndim, es, &nbytes) || !sd_mul_size((size_t)t->offset, es, &start) ||
            !view_end(t, &end) || !sd_mul_size((size_t)end, es, &need) || need > e->size) {
            st = sd_set_error(ctx, SD_ERR_PARSE, "%s: tensor '%s' runs past the end of its storage", path, t->name);
            break;
        }
        if (t->strided && nbytes > need - start && nbytes > SD_PICKLE_MAX_BYTES) {
            st = sd_set_error(ctx, SD_ERR_LIMIT,
                              "%s: tensor '%s' repeats its storage's elements into %zu bytes (at most %d)", path,
                              t->name, nbytes, SD_PICKLE_MAX_BYTES);
            break;
        }
        out[i] = (sd_st_tensor){.name = t->name, .dtype = t->dtype, .ndim = t->ndim, .nbytes = nbytes,
                                .numel = nbytes / es, .offset = e->offset + start};
        memcpy(out[i].shape, t->shape, sizeof out[i].shape);
        if (nbytes && (e->deflated || t->strided))
            st = materialise(ctx, path, r, e, &held, t, end, &out[i]);
    }
    free(held.bytes);
    return st;
}

/* The legacy format (torch.save before 1.6): pickles of the magic number, the protocol version
 * and the system info, the main pickle, the list of storage keys, then per key its element
 * count (8 bytes, little-endian) and its bytes. The vm holds the file's first bytes (base: where
 * they start); the storages are located with reads past the pickles. Fills *table (keys point
 * into the vm's values). */
static sd_status legacy_read(vm *m, const unsigned char *base, const sd_torch_reader *r, sd_pickle_tensors *pt,
                             zip_entry **table, size_t *n_table)
{
    value *v = NULL, *keys = NULL;
    sd_status st = SD_OK;
    for (int i = 0; !st && i < 3; i++)
        st = run_pickle(m, &v);
    if (!st)
        st = run_pickle(m, &v);
    if (!st)
        st = collect(m, state_dict(v), "", 0, pt);
    if (!st && !(st = run_pickle(m, &keys)) && keys->kind != V_LIST)
        st = fail(m, SD_ERR_PARSE, "malformed legacy checkpoint (no list of storage keys)");
    if (!st && !(*table = calloc(keys->n + 1, sizeof **table)))
        st = fail(m, SD_ERR_NOMEM, "out of memory");
    uint64_t pos = (uint64_t)(m->p - base);
    for (size_t i = 0; !st && i < keys->n; i++) {
        const value *k = keys->items[i];
        const sd_pickle_tensor *user = NULL;
        for (size_t j = 0; k->kind == V_STR && j < pt->n && !user; j++)
            if (!strcmp(pt->items[j].storage, k->s))
                user = &pt->items[j];
        unsigned char b[8];
        size_t bytes;
        if (k->kind != V_STR || pos > r->size || r->size - pos < 8)
            return fail(m, SD_ERR_PARSE, "truncated legacy checkpoint");
        if ((st = r->read(r->user, pos, b, sizeof b)))
            return st;
        uint64_t count = le(b, 8);
        pos += 8;
        if (!user) /* a storage no tensor of the state dict views: its element size is unknown */
            return fail(m, SD_ERR_INVALID, "legacy checkpoint with a storage outside the state dict");
        if (count > SIZE_MAX || !sd_mul_size((size_t)count, sd_st_dtype_size(user->dtype), &bytes) ||
            bytes > r->size - pos)
            return fail(m, SD_ERR_PARSE, "a storage runs past the end of the legacy checkpoint");
        (*table)[(*n_table)++] = (zip_entry){.name = k->s, .name_len = k->len, .offset = pos, .size = bytes};
        pos += bytes;
    }
    return st;
}

/* Hands the tensors to the caller (their names move from pt) or frees them on failure. */
static sd_status finish(sd_status st, sd_pickle_tensors *pt, sd_st_tensor *out, sd_st_tensor **tensors, size_t *n)
{
    if (st) {
        for (size_t i = 0; out && i < pt->n; i++)
            free((void *)out[i].mem);
        free(out);
        sd_pickle_tensors_free(pt);
        return st;
    }
    for (size_t i = 0; i < pt->n; i++)
        free(pt->items[i].storage);
    free(pt->items);
    *tensors = out;
    *n = pt->n;
    return SD_OK;
}

static sd_status legacy_parse(sd_context *ctx, const char *path, const sd_torch_reader *r, sd_st_tensor **tensors,
                              size_t *n)
{
    size_t head_n = (size_t)(r->size < SD_PICKLE_MAX_BYTES ? r->size : SD_PICKLE_MAX_BYTES);
    unsigned char *head = NULL;
    sd_status st = read_new(ctx, path, r, 0, head_n, &head);
    if (st)
        return st;
    vm m = {.ctx = ctx, .source = path, .p = head, .end = head + head_n};
    sd_pickle_tensors pt = {0};
    zip_entry *table = NULL;
    size_t n_table = 0;
    st = legacy_read(&m, head, r, &pt, &table, &n_table);
    sd_st_tensor *out = st ? NULL : calloc(pt.n + 1, sizeof *out);
    if (!st && !out)
        st = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
    storages s = {.table = table, .n_table = n_table};
    if (!st)
        st = torch_tensors(ctx, path, r, &s, &pt, out);
    free(table);
    vm_free(&m);
    free(head);
    return finish(st, &pt, out, tensors, n);
}

sd_status sd_torch_parse(sd_context *ctx, const char *path, const sd_torch_reader *r, sd_st_tensor **tensors,
                         size_t *n)
{
    *tensors = NULL;
    *n = 0;
    unsigned char first = 0;
    sd_status st = r->size ? r->read(r->user, 0, &first, 1) : SD_OK;
    if (st)
        return st;
    if (first == 0x80)
        return legacy_parse(ctx, path, r, tensors, n);
    zip z = {.ctx = ctx, .path = path, .r = r};
    sd_pickle_tensors pt = {0};
    unsigned char *pkl_bytes = NULL;
    st = zip_read(&z);
    const zip_entry *pkl = NULL;
    for (size_t i = 0; !st && i < z.n && !pkl; i++) {
        const zip_entry *e = &z.entries[i];
        const char *slash = memchr(e->name, '/', e->name_len);
        if (slash && (size_t)(e->name + e->name_len - slash) == 9 && !memcmp(slash, "/data.pkl", 9))
            pkl = e;
    }
    if (!st && !pkl)
        st = sd_set_error(ctx, SD_ERR_PARSE, "%s: no data.pkl in the archive (not a torch checkpoint)", path);
    if (!st && pkl->size > SD_PICKLE_MAX_BYTES)
        st = sd_set_error(ctx, SD_ERR_LIMIT, "%s: data.pkl is %zu bytes (at most %d)", path, pkl->size,
                          SD_PICKLE_MAX_BYTES);
    if (!st)
        st = pkl->deflated ? inflate_entry(ctx, path, r, pkl, &pkl_bytes)
                           : read_new(ctx, path, r, pkl->offset, pkl->size, &pkl_bytes);
    if (!st)
        st = sd_pickle_read(ctx, path, pkl_bytes, pkl->size, &pt);
    free(pkl_bytes);
    sd_st_tensor *out = st ? NULL : calloc(pt.n + 1, sizeof *out);
    if (!st && !out)
        st = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
    storages s = {.z = &z, .prefix = pkl ? pkl->name : NULL, .plen = pkl ? pkl->name_len - 8 : 0};
    if (!st)
        st = torch_tensors(ctx, path, r, &s, &pt, out);
    free(z.entries);
    free(z.cd);
    return finish(st, &pt, out, tensors, n);
}
