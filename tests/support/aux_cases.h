/* The image shapes of the annotator goldens (tests/reference/make_aux_goldens.py, CASES):
 * aux_in_<name>.u8 is h x w x 3; at resolution 64 the outputs are th x tw. */
#ifndef SD_TEST_AUX_CASES_H
#define SD_TEST_AUX_CASES_H

typedef struct aux_case {
    const char *name;
    int h, w, th, tw;
} aux_case;

static const aux_case aux_cases[] = {
    {"up", 48, 40, 77, 64}, {"down", 120, 90, 85, 64}, {"half", 128, 128, 64, 64},
    {"same", 64, 80, 64, 80}, {"wide", 40, 57, 64, 91},
};
#define AUX_N_CASES (sizeof aux_cases / sizeof aux_cases[0])
#endif
