/* Every file a node reads is in its cache key: each stock graph (graphs/NAME.xml) runs under
 * `sdflow run` on tiny random models while inotify watches the model and input directories, and
 * every file opened there must be listed in the sdflow:provenance of the PNGs the run wrote
 * (the provenance lists exactly the files hashed into the keys). Prompts name an embedding
 * (embedding:emb), which must be opened and listed; a decoy embedding, an unused checkpoint and
 * an unused image sit beside the files used and must never be opened. This does not depend on
 * how a node opens a file, so it also catches a reader that bypasses sd_file_open. */
#include "test.h"
#include "core/png.h"
#include "ml/formats/safetensors.h"
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *env(const char *name)
{
    const char *v = getenv(name);
    if (!v) {
        fprintf(stderr, "test_stock_reads: %s is not set\n", name);
        exit(1);
    }
    return v;
}

/* The whole file as a NUL-terminated string (malloc'd), or NULL. */
static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n = f && fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)))
        buf[fread(buf, 1, (size_t)n, f)] = '\0';
    if (f)
        fclose(f);
    return buf;
}

static sd_status fill_small(void *user, size_t index, void *dst, size_t nbytes)
{
    (void)user;
    float *v = dst;
    for (size_t i = 0; i < nbytes / sizeof *v; i++)
        v[i] = 0.01f * (float)((i + index) % 7);
    return SD_OK;
}

static const char *const watched[] = {"models/checkpoints", "models/loras", "models/controlnet",
                                      "models/upscale_models", "models/embeddings", "models/vae", "in",
                                      "models/annotators", "models/diffusion_models", "models/text_encoders",
                                      "models/clip_vision", "models/ipadapter", "models/style_models",
                                      "models/insightface", "models/insightface/models",
                                      "models/insightface/models/buffalo_l"};
/* The kind each watched directory's files are recorded under in the provenance ("<kind>/<name>"). */
static const char *const kinds[] = {"checkpoints", "loras", "controlnet", "upscale_models", "embeddings", "vae",
                                    "input", "annotators", "diffusion_models", "text_encoders", "clip_vision",
                                    "ipadapter", "style_models", "insightface", "insightface/models",
                                    "insightface/models/buffalo_l"};
#define N_WATCHED (sizeof watched / sizeof watched[0])
static char *dirs[N_WATCHED];

/* Runs argv (NULL-terminated); stdout into *out (malloc'd), stderr into *err; returns the exit
 * status. */
static int spawn(char *const argv[], char **out, char **err)
{
    char *o = test_path(test_scratch_dir(), "stdout"), *e = test_path(test_scratch_dir(), "stderr");
    pid_t pid = fork();
    if (pid == 0) {
        int fo = open(o, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(e, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fo, STDOUT_FILENO);
        dup2(fe, STDERR_FILENO);
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    *out = read_text(o);
    *err = read_text(e);
    free(o);
    free(e);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void tool(const char *cmd)
{
    char *line = sd_strfmt("%s >/dev/null", cmd);
    CHECK_MSG(system(line) == 0, "%s failed", cmd);
    free(line);
}

/* An SD1 embedding (one tensor of the tiny CLIP's width), or with sdxl an SDXL one (clip_l and clip_g
 * of the tiny SDXL base's widths). */
static void write_embedding(const char *name, bool sdxl)
{
    sd_context *ctx;
    sd_context_new(&ctx);
    sd_st_entry sd1[1] = {{.name = "emb_params", .dtype = SD_ST_F32, .ndim = 2, .shape = {1, 64}}};
    sd_st_entry xl[2] = {{.name = "clip_g", .dtype = SD_ST_F32, .ndim = 2, .shape = {1, 192}},
                         {.name = "clip_l", .dtype = SD_ST_F32, .ndim = 2, .shape = {1, 128}}};
    char *path = test_path(dirs[4], name);
    CHECK_EQ_INT(sd_safetensors_write(ctx, path, sdxl ? xl : sd1, sdxl ? 2 : 1, NULL, fill_small, NULL), SD_OK);
    free(path);
    sd_context_free(ctx);
}

/* Tiny models under the stock graphs' default names, and the example images. */
static void make_models(void)
{
    const char *build = env("SDFLOW_BUILD_DIR"), *src = env("SDFLOW_SOURCE_DIR");
    char *models = test_path(test_scratch_dir(), "models");
    mkdir(models, 0755);
    for (size_t i = 0; i < N_WATCHED; i++) {
        dirs[i] = test_path(test_scratch_dir(), watched[i]);
        mkdir(dirs[i], 0755);
    }
    char *cmd[] = {
        sd_strfmt("%s/sdflow_mkckpt --preset tiny %s/v1-5-pruned-emaonly.safetensors", build, dirs[0]),
        sd_strfmt("%s/sdflow_mkckpt --preset tiny --seed 3 %s/unused.safetensors", build, dirs[0]),
        sd_strfmt("%s/sdflow_mkckpt --preset tiny --in-channels 9 %s/sd-v1-5-inpainting.safetensors", build, dirs[0]),
        sd_strfmt("%s/sdflow_mkckpt --preset sdxl-tiny --dtype f16 %s/sd_xl_base_1.0.safetensors", build, dirs[0]),
        sd_strfmt("%s/sdflow_mkckpt --preset sdxl-refiner-tiny --dtype f16 --seed 1 %s/sd_xl_refiner_1.0.safetensors",
                  build, dirs[0]),
        sd_strfmt("%s/sdflow_mklora %s/v1-5-pruned-emaonly.safetensors %s/lora.safetensors", build, dirs[0], dirs[1]),
        sd_strfmt("%s/sdflow_mkckpt --preset tiny --kind controlnet %s/control_v11p_sd15_canny_fp16.safetensors",
                  build, dirs[2]),
        sd_strfmt("%s/sdflow_mkckpt --preset tiny --kind controlnet --seed 5 %s/control_v11p_sd15_scribble_fp16.safetensors",
                  build, dirs[2]),
        sd_strfmt("%s/sdflow_mkesrgan --nf 8 --gc 4 --blocks 1 %s/RealESRGAN_x4plus.safetensors", build, dirs[3]),
        sd_strfmt("cp %s/examples/input/shapes.png %s/examples/input/shapes-inpaint.png %s/examples/input/scribble.png %s/",
                  src, src, src, dirs[6]),
        sd_strfmt("cp %s/examples/input/shapes.png %s/unused.png", src, dirs[6]),
        sd_strfmt("cp %s/examples/input/shapes.png %s/person.png", src, dirs[6]),
        sd_strfmt("%s/sdflow_mkckpt --preset tiny --kind controlnet --seed 6 %s/control_v11p_sd15_openpose_fp16.safetensors",
                  build, dirs[2]),
        sd_strfmt("cp %s/tests/data/goldens/pose_body.safetensors %s/body_pose_model.pth", src, dirs[7]),
        sd_strfmt("cp %s/tests/data/goldens/pose_hand.safetensors %s/hand_pose_model.pth", src, dirs[7]),
        sd_strfmt("cp %s/tests/data/goldens/pose_face.pth %s/facenet.pth", src, dirs[7]),
        sd_strfmt("%s/sdflow_mkckpt --preset flux-schnell-tiny %s/flux1-schnell.safetensors", build, dirs[8]),
        sd_strfmt("%s/sdflow_mkckpt --preset flux-dev-tiny --seed 2 %s/flux1-dev.safetensors", build, dirs[8]),
        sd_strfmt("%s/sdflow_mkckpt --preset flux-dev-tiny --kind vae %s/ae.safetensors", build, dirs[5]),
        sd_strfmt("%s/sdflow_mktextenc t5 %s/t5xxl_fp16.safetensors", build, dirs[9]),
        sd_strfmt("%s/sdflow_mktextenc clip-l %s/clip_l.safetensors", build, dirs[9]),
        /* the IP-Adapter's tiny UNet (22 attn2 layers), CLIP vision models and IP-Adapter */
        sd_strfmt("%s/sdflow_mkckpt --preset tiny --res-blocks 2 --depth 2 %s/ipa-tiny.safetensors", build, dirs[0]),
        sd_strfmt("cp %s/tests/data/goldens/clip_vision_hf.safetensors %s/CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
                  src, dirs[10]),
        sd_strfmt("cp %s/tests/data/goldens/clip_vision_proj160.safetensors %s/clip_vision_g.safetensors", src, dirs[10]),
        sd_strfmt("cp %s/tests/data/goldens/ipa_plain.safetensors %s/ip-adapter_sd15.safetensors", src, dirs[11]),
        sd_strfmt("cp %s/tests/data/goldens/ipa_faceid_plusv2.safetensors %s/ip-adapter-faceid-plusv2_sd15.safetensors",
                  src, dirs[11]),
        sd_strfmt("cp %s/tests/data/goldens/ipa_faceid_lora.safetensors %s/ip-adapter-faceid-plusv2_sd15_lora.safetensors",
                  src, dirs[1]),
        sd_strfmt("cp %s/tests/data/goldens/faceid_embeds.safetensors %s/face.safetensors", src, dirs[6]),
        /* ipadapter-faceid.xml: InsightFace's tiny pack and a FaceID adapter for its 512-wide embeddings */
        sd_strfmt("cp %s/tests/data/insightface/tiny_pack/det_tiny.onnx %s/tests/data/insightface/tiny_pack/rec_tiny.onnx "
                  "%s/", src, src, dirs[15]),
        sd_strfmt("cp %s/tests/data/goldens/ipa_faceid_arcface.safetensors %s/ip-adapter-faceid_sd15.safetensors", src,
                  dirs[11]),
        sd_strfmt("cp %s/tests/data/goldens/ipa_faceid_lora.safetensors %s/ip-adapter-faceid_sd15_lora.safetensors", src,
                  dirs[1]),
        sd_strfmt("cp %s/examples/input/shapes.png %s/face.png", src, dirs[6]),
        sd_strfmt("cp %s/examples/input/shapes.png %s/photo.png", src, dirs[6]),
        sd_strfmt("%s/sdflow_mkckpt --preset tiny --kind controlnet --seed 7 %s/control_v11f1p_sd15_depth_fp16.safetensors",
                  build, dirs[2]),
        sd_strfmt("cp %s/tests/data/goldens/depth_tiny.pth %s/depth_anything_v2_vits.pth", src, dirs[7]),
        /* FLUX Redux: SigLIP and the Redux model for the tiny FLUX dev's 32-wide context */
        sd_strfmt("%s/sdflow_mkckpt --kind siglip-tiny %s/sigclip_vision_patch14_384.safetensors", build, dirs[10]),
        sd_strfmt("%s/sdflow_mkckpt --preset flux-dev-tiny --kind redux-tiny %s/flux1-redux-dev.safetensors", build,
                  dirs[12]),
        sd_strfmt("%s/sdflow_mkckpt --preset sd2-unclip-tiny --dtype f16 %s/sd21-unclip-h.ckpt", build, dirs[0]),
    };
    for (size_t i = 0; i < sizeof cmd / sizeof cmd[0]; i++) {
        tool(cmd[i]);
        free(cmd[i]);
    }
    write_embedding("emb.safetensors", false);
    write_embedding("embxl.safetensors", true);
    write_embedding("decoy.safetensors", false);
    free(models);
}

/* The names ("<kind>/<name>") in the sdflow:provenance of each PNG listed in `written` (one path a
 * line). */
static json_t *provenance_files(const char *written)
{
    json_t *all = json_object();
    sd_context *ctx;
    sd_context_new(&ctx);
    char *copy = sd_strdup(written), *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *text = NULL;
        CHECK_MSG(sd_png_read_text(ctx, line, NULL, "sdflow:provenance", &text) == SD_OK, "%s: %s", line,
                  sd_context_errmsg(ctx));
        json_t *root = text ? json_loads(text, 0, NULL) : NULL;
        json_object_update(all, json_object_get(root, "files"));
        json_decref(root);
        free(text);
    }
    free(copy);
    sd_context_free(ctx);
    return all;
}

static bool has_param(const char *xml, const char *name)
{
    char *needle = sd_strfmt("<param name=\"%s\"", name);
    bool found = strstr(xml, needle) != NULL;
    free(needle);
    return found;
}

/* Runs one stock graph with inotify watching; checks every file opened is in its provenance. */
static void check_graph(const char *graph)
{
    const char *src = env("SDFLOW_SOURCE_DIR");
    char *path = sd_strfmt("%s/graphs/%s", src, graph), *out_dir = sd_strfmt("%s/out-%s", test_scratch_dir(), graph);
    char *xml = read_text(path);
    char *args[40] = {(char *)env("SDFLOW_BIN"), "run", path, "--no-cache", "--output-dir", out_dir,
                      "--input-dir", dirs[6], "--models-dir", NULL};
    int n = 9;
    char *models = test_path(test_scratch_dir(), "models");
    args[n++] = models;
    static const char *const sets[][2] = {{"steps", "steps=1"},  {"hires_steps", "hires_steps=1"},
                                          {"width", "width=64"}, {"height", "height=64"}, {"resolution", "resolution=192"},
                                          {"prompt", "prompt=a cat, embedding:emb"}};
    bool sdxl = strncmp(graph, "sdxl", 4) == 0; /* SDXL text encoders take SDXL embeddings */
    const char *emb_file = sdxl ? "embxl.safetensors" : "emb.safetensors";
    bool prompt = false;
    for (size_t i = 0; xml && i < sizeof sets / sizeof sets[0]; i++)
        if (has_param(xml, sets[i][0])) {
            args[n++] = "--set";
            args[n++] = (char *)(sdxl && !strcmp(sets[i][0], "prompt") ? "prompt=a cat, embedding:embxl" : sets[i][1]);
            prompt |= strcmp(sets[i][0], "prompt") == 0;
        }
    if (strncmp(graph, "ipadapter", 9) == 0) { /* the tiny IP-Adapter's UNet */
        args[n++] = "--set";
        args[n++] = "checkpoint=ipa-tiny.safetensors";
    }
    if (strcmp(graph, "ipadapter-faceid.xml") == 0) { /* the adapter for the tiny ArcFace's embeddings */
        args[n++] = "--set";
        args[n++] = "preset=FACEID";
    }
    args[n] = NULL;
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    int wd[N_WATCHED];
    for (size_t i = 0; i < N_WATCHED; i++)
        wd[i] = inotify_add_watch(fd, dirs[i], IN_OPEN);
    char *out = NULL, *err = NULL;
    int rc = spawn(args, &out, &err);
    CHECK_MSG(rc == 0, "%s exited %d: %s", graph, rc, err ? err : "");
    json_t *listed = provenance_files(out ? out : "");
    char buf[1 << 16];
    ssize_t got;
    bool saw_embedding = false;
    int opened = 0;
    while ((got = read(fd, buf, sizeof buf)) > 0)
        for (char *p = buf; p < buf + got;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            p += sizeof *ev + ev->len;
            if (ev->mask & IN_ISDIR || !ev->len)
                continue;
            for (size_t i = 0; i < N_WATCHED; i++) {
                if (wd[i] != ev->wd)
                    continue;
                char *file = test_path(dirs[i], ev->name), *name = sd_strfmt("%s/%s", kinds[i], ev->name);
                CHECK_MSG(json_object_get(listed, name), "%s: opened %s, which its provenance does not list as %s",
                          graph, file, name);
                saw_embedding |= strcmp(ev->name, emb_file) == 0;
                opened++;
                free(name);
                free(file);
            }
        }
    CHECK_MSG(opened > 0, "%s: no file opened in the watched directories", graph);
    CHECK_MSG(!prompt || saw_embedding, "%s: %s was not read", graph, emb_file);
    close(fd);
    json_decref(listed);
    free(out);
    free(err);
    free(models);
    free(xml);
    free(out_dir);
    free(path);
}

static void test_stock_graphs(void)
{
    make_models();
    char *graphs = test_path(env("SDFLOW_SOURCE_DIR"), "graphs");
    DIR *d = opendir(graphs);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        if (l > 4 && strcmp(e->d_name + l - 4, ".xml") == 0) {
            check_graph(e->d_name);
            n++;
        }
    }
    if (d)
        closedir(d);
    CHECK_MSG(n >= 11, "only %d stock graphs found in %s", n, graphs);
    free(graphs);
}

int main(void)
{
    RUN(test_stock_graphs);
    for (size_t i = 0; i < N_WATCHED; i++)
        free(dirs[i]);
    return test_summary("test_stock_reads");
}
