/* Programs and kernels: sources (embedded or from the source tree), building with the build log
 * on failure, and the on-disk binary cache.
 *
 * Cache file format: "SDCLBIN1", payload length (8 bytes, little endian), BLAKE2b-256 of the
 * payload, payload (the device binary). A file that fails any check is rebuilt and rewritten.
 * Files are written as "<file>.tmp.<pid>" (locked while written) and renamed into place. */
#include "runtime-opencl/runtime_internal.h"
#include "core/embedded.h"
#include <blake2.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BASE_OPTIONS "-cl-std=CL1.2"
static const char cache_magic[8] = {'S', 'D', 'C', 'L', 'B', 'I', 'N', '1'};

typedef struct kernel_entry {
    char *name;
    cl_kernel kernel;
    struct kernel_entry *next;
} kernel_entry;

struct sd_cl_program_entry {
    char *file, *options;
    cl_program program;
    kernel_entry *kernels;
    sd_cl_program_entry *next;
};

void sd_cl_programs_free(sd_cl *cl)
{
    while (cl->programs) {
        sd_cl_program_entry *p = cl->programs;
        cl->programs = p->next;
        while (p->kernels) {
            kernel_entry *k = p->kernels;
            p->kernels = k->next;
            clReleaseKernel(k->kernel);
            free(k->name);
            free(k);
        }
        clReleaseProgram(p->program);
        free(p->file);
        free(p->options);
        free(p);
    }
}

/* mkdir -p; true when the directory exists afterwards. */
static bool make_dirs(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        bool ok = mkdir(path, 0755) == 0 || errno == EEXIST;
        *p = '/';
        if (!ok)
            return false;
    }
    return mkdir(path, 0755) == 0 || errno == EEXIST;
}

/* True for the name of a temporary binary, "<hex>.bin.tmp.<pid>". */
static bool is_temp_name(const char *name)
{
    const char *t = strstr(name, ".bin.tmp.");
    if (!t || !t[9])
        return false;
    for (t += 9; *t; t++)
        if (*t < '0' || *t > '9')
            return false;
    return true;
}

/* Removes the temporary binaries that processes killed while writing one left in dir. A writer
 * holds an flock on its temporary file from creating it until it is renamed into place, so a
 * file is removed only when no process holds that lock (its writer is gone) and it is older than
 * TEMP_MIN_AGE seconds (a writer that just created it may not have locked it yet). Processes
 * on other machines sharing the directory over NFS count as live when the lock cannot be
 * checked. Best effort: errors leave the file. */
#define TEMP_MIN_AGE 60
static void remove_stale_temps(const char *dir)
{
    DIR *d = opendir(dir);
    time_t now = time(NULL);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!is_temp_name(e->d_name))
            continue;
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        struct stat was, is;
        if (fd >= 0 && fstat(fd, &was) == 0 && S_ISREG(was.st_mode) && now - was.st_mtime >= TEMP_MIN_AGE &&
            flock(fd, LOCK_EX | LOCK_NB) == 0 && fstatat(dirfd(d), e->d_name, &is, AT_SYMLINK_NOFOLLOW) == 0 &&
            is.st_ino == was.st_ino && is.st_dev == was.st_dev)
            unlinkat(dirfd(d), e->d_name, 0);
        if (fd >= 0)
            close(fd);
    }
    if (d)
        closedir(d);
}

void sd_cl_cache_init(sd_cl *cl)
{
    const char *env = getenv("SDFLOW_KERNEL_CACHE");
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    char *dir = NULL;
    if (env && *env)
        dir = sd_strdup(env);
    else if (xdg && *xdg)
        dir = sd_strfmt("%s/sdflow/kernels", xdg);
    else if (home && *home)
        dir = sd_strfmt("%s/.cache/sdflow/kernels", home);
    if (dir && !make_dirs(dir)) {
        sd_warn(cl->ctx, "kernel cache disabled: cannot create %s: %s", dir, strerror(errno));
        free(dir);
        dir = NULL;
    }
    if (dir)
        remove_stale_temps(dir);
    cl->cache_dir = dir;
}

static void cache_disable(sd_cl *cl, const char *why, const char *path)
{
    sd_warn(cl->ctx, "kernel cache disabled: %s %s: %s", why, path, strerror(errno));
    free(cl->cache_dir);
    cl->cache_dir = NULL;
}

/* Source text of a kernel file: malloc'd copy. */
static sd_status load_source(sd_cl *cl, const char *file, char **out)
{
    *out = NULL;
#ifdef SDFLOW_KERNELS_FROM_DISK
    static const char *const dirs[] = {"runtime-opencl/kernels", "runtime-opencl", "nodes/kernels",
                                       "nodes"};
    const char *root = getenv("SDFLOW_SOURCE_DIR");
    if (!root || !*root)
        root = SDFLOW_SOURCE_DIR;
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        char *path = sd_strfmt("%s/%s/%s", root, dirs[i], file);
        if (!path)
            return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
        FILE *f = fopen(path, "rb");
        free(path);
        if (!f)
            continue;
        char *text = NULL;
        size_t len = 0, cap = 0, got;
        char chunk[65536];
        sd_status st = SD_OK;
        while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
            if (len + got + 1 > cap) {
                cap = (len + got + 1) * 2;
                char *grown = realloc(text, cap);
                if (!grown) {
                    st = sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory reading kernel %s", file);
                    break;
                }
                text = grown;
            }
            memcpy(text + len, chunk, got);
            len += got;
        }
        fclose(f);
        if (st) {
            free(text);
            return st;
        }
        if (!text && !(text = calloc(1, 1)))
            return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory reading kernel %s", file);
        text[len] = '\0';
        *out = text;
        return SD_OK;
    }
    return sd_set_error(cl->ctx, SD_ERR_NOT_FOUND, "kernel file %s not found under %s", file, root);
#else
    const sd_embedded_file *f = sd_embedded_find(sd_embedded_kernels, file);
    if (!f)
        return sd_set_error(cl->ctx, SD_ERR_NOT_FOUND, "kernel file %s is not embedded in this build", file);
    if (!(*out = sd_strdup((const char *)f->data)))
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    return SD_OK;
#endif
}

/* Length-prefixed string into the hash, so ("ab","c") and ("a","bc") differ. The runtime hashes
 * with libb2 directly (not core/hash.c, which belongs to the result cache). */
static void hash_str(blake2b_state *h, const char *s)
{
    uint64_t len = strlen(s);
    blake2b_update(h, (const uint8_t *)&len, sizeof len);
    blake2b_update(h, (const uint8_t *)s, len);
}

static char *cache_path(sd_cl *cl, const char *source, const char *options)
{
    blake2b_state h;
    unsigned char key[32];
    blake2b_init(&h, sizeof key);
    hash_str(&h, "sdflow-cl-binary-1");
    hash_str(&h, source);
    hash_str(&h, options);
    hash_str(&h, cl->device_name);
    hash_str(&h, cl->driver_version);
    hash_str(&h, cl->platform_name);
    blake2b_final(&h, key, sizeof key);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", key[i]);
    return sd_strfmt("%s/%s.bin", cl->cache_dir, hex);
}

static void checksum(const void *data, size_t len, unsigned char out[32])
{
    blake2b(out, data, NULL, 32, len, 0);
}

/* A built program from a cached binary, or NULL (missing, corrupt or rejected). */
static cl_program cache_load(sd_cl *cl, const char *path, const char *options)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char head[8 + 8 + 32];
    unsigned char *payload = NULL;
    cl_program prog = NULL;
    uint64_t len = 0;
    if (fread(head, 1, sizeof head, f) != sizeof head || memcmp(head, cache_magic, 8) != 0)
        goto done;
    for (int i = 0; i < 8; i++)
        len |= (uint64_t)head[8 + i] << (8 * i);
    if (len == 0 || len > ((uint64_t)1 << 30) || !(payload = malloc((size_t)len)))
        goto done;
    if (fread(payload, 1, (size_t)len, f) != len || fgetc(f) != EOF)
        goto done;
    unsigned char sum[32];
    checksum(payload, (size_t)len, sum);
    if (memcmp(sum, head + 16, 32) != 0)
        goto done;
    size_t size = (size_t)len;
    const unsigned char *bins[1] = {payload};
    cl_int status = CL_SUCCESS, err;
    prog = clCreateProgramWithBinary(cl->context, 1, &cl->device, &size, bins, &status, &err);
    if (prog && (err != CL_SUCCESS || status != CL_SUCCESS ||
                 clBuildProgram(prog, 1, &cl->device, options, NULL, NULL) != CL_SUCCESS)) {
        clReleaseProgram(prog);
        prog = NULL;
    }
done:
    free(payload);
    fclose(f);
    return prog;
}

static void cache_store(sd_cl *cl, const char *path, cl_program prog)
{
    size_t size = 0;
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL) != CL_SUCCESS || size == 0)
        return;
    unsigned char *bin = malloc(size);
    char *tmp = sd_strfmt("%s.tmp.%ld", path, (long)getpid());
    unsigned char *bins[1] = {bin};
    if (!bin || !tmp || clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL) != CL_SUCCESS)
        goto done;
    unsigned char head[8 + 8 + 32];
    memcpy(head, cache_magic, 8);
    for (int i = 0; i < 8; i++)
        head[8 + i] = (unsigned char)((uint64_t)size >> (8 * i));
    checksum(bin, size, head + 16);
    /* Locked until renamed, so that remove_stale_temps leaves it alone while this process lives. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    FILE *f = fd >= 0 && flock(fd, LOCK_EX) == 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        cache_disable(cl, "cannot write", tmp);
        goto done;
    }
    bool ok = fwrite(head, 1, sizeof head, f) == sizeof head && fwrite(bin, 1, size, f) == size &&
              fflush(f) == 0 && rename(tmp, path) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        unlink(tmp);
        cache_disable(cl, "cannot write", path);
        goto done;
    }
    cl->stats.cache_writes++;
done:
    free(bin);
    free(tmp);
}

static sd_status build_from_source(sd_cl *cl, const char *file, const char *source,
                                   const char *options, cl_program *out)
{
    cl_int err;
    const char *srcs[1] = {source};
    cl_program prog = clCreateProgramWithSource(cl->context, 1, srcs, NULL, &err);
    if (!prog)
        return SD_CL_FAIL(cl, err, "clCreateProgramWithSource");
    err = clBuildProgram(prog, 1, &cl->device, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        size_t len = 0;
        clGetProgramBuildInfo(prog, cl->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &len);
        char *log = calloc(len + 1, 1);
        if (log)
            clGetProgramBuildInfo(prog, cl->device, CL_PROGRAM_BUILD_LOG, len, log, NULL);
        /* The message is one line: join the log's lines. */
        for (char *p = log; p && *p; p++)
            if (*p == '\n')
                *p = (p[1] ? ' ' : '\0');
        sd_set_error(cl->ctx, SD_ERR_CL, "OpenCL: building %s (options \"%s\") failed: %s: %s", file,
                     options, sd_cl_error_name(err), log && *log ? log : "(no build log)");
        free(log);
        clReleaseProgram(prog);
        return SD_ERR_CL;
    }
    cl->stats.programs_compiled++;
    *out = prog;
    return SD_OK;
}

static sd_cl_program_entry *find_program(sd_cl *cl, const char *file, const char *options)
{
    for (sd_cl_program_entry *p = cl->programs; p; p = p->next)
        if (strcmp(p->file, file) == 0 && strcmp(p->options, options) == 0)
            return p;
    return NULL;
}

/* Builds (or loads from the binary cache) and records program (file, options) from source. */
static sd_status make_program(sd_cl *cl, const char *file, const char *source, const char *options,
                              cl_program *out)
{
    char *full = NULL, *path = NULL;
    cl_program prog = NULL;
    sd_cl_program_entry *e = NULL;
    sd_status st = SD_OK;
    if (!(full = sd_strfmt("%s %s", BASE_OPTIONS, options))) {
        st = sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (cl->cache_dir && (path = cache_path(cl, source, full)) && (prog = cache_load(cl, path, full)))
        cl->stats.programs_from_cache++;
    if (!prog) {
        if ((st = build_from_source(cl, file, source, full, &prog)))
            goto done;
        if (cl->cache_dir && path)
            cache_store(cl, path, prog);
    }
    e = calloc(1, sizeof *e);
    if (!e || !(e->file = sd_strdup(file)) || !(e->options = sd_strdup(options))) {
        st = sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    e->program = prog;
    e->next = cl->programs;
    cl->programs = e;
    *out = prog;
    prog = NULL;
    e = NULL;
done:
    if (e) {
        free(e->file);
        free(e->options);
        free(e);
    }
    if (prog)
        clReleaseProgram(prog);
    free(full);
    free(path);
    return st;
}

sd_status sd_cl_program(sd_cl *cl, const char *file, const char *options, cl_program *out)
{
    if (!options)
        options = "";
    sd_cl_program_entry *p = find_program(cl, file, options);
    if (p) {
        *out = p->program;
        return SD_OK;
    }
    char *source = NULL;
    sd_status st = load_source(cl, file, &source);
    if (!st)
        st = make_program(cl, file, source, options, out);
    free(source);
    return st;
}

sd_status sd_cl_program_source(sd_cl *cl, const char *label, const char *source, const char *options,
                               cl_program *out)
{
    if (!options)
        options = "";
    sd_cl_program_entry *p = find_program(cl, label, options);
    if (p) {
        *out = p->program;
        return SD_OK;
    }
    return make_program(cl, label, source, options, out);
}

sd_status sd_cl_kernel(sd_cl *cl, const char *file, const char *name, const char *options,
                       cl_kernel *out)
{
    cl_program prog;
    sd_status st = sd_cl_program(cl, file, options, &prog);
    if (st)
        return st;
    sd_cl_program_entry *p = cl->programs;
    while (p->program != prog)
        p = p->next;
    for (kernel_entry *k = p->kernels; k; k = k->next)
        if (strcmp(k->name, name) == 0) {
            *out = k->kernel;
            return SD_OK;
        }
    cl_int err;
    cl_kernel kernel = clCreateKernel(prog, name, &err);
    if (!kernel)
        return sd_set_error(cl->ctx, err == CL_OUT_OF_HOST_MEMORY ? SD_ERR_NOMEM : SD_ERR_CL,
                            "OpenCL: kernel %s in %s: %s", name, file, sd_cl_error_name(err));
    kernel_entry *k = malloc(sizeof *k);
    if (!k || !(k->name = sd_strdup(name))) {
        free(k);
        clReleaseKernel(kernel);
        return sd_set_error(cl->ctx, SD_ERR_NOMEM, "out of memory");
    }
    k->kernel = kernel;
    k->next = p->kernels;
    p->kernels = k;
    *out = kernel;
    return SD_OK;
}
