/* mnist: classify the held-out MNIST images with each model given, through
 * the micro runtime, layer by layer, and print each model's accuracy.
 *
 *   mnist --test mnist-test.bin MODEL.lsq...
 *
 * The models and the test set are written by
 * `cargo run --release --example mnist_train -- DIR` (repository root).
 * mnist-test.bin, all little-endian: magic "LSQMNIST", u32 image count N,
 * u32 pixels per image P (784), then N records of P u8 pixels (row-major
 * 28x28, 0..255; the model's input is pixel / 255) and one u8 label.
 *
 * For each model: open it, ask lsqr_micro_arena_size, malloc the arena
 * once, lsqr_micro_load, then for every image set the input, run the layers
 * one by one with lsqr_micro_run_layer, copy the logits out and take the
 * argmax. One line per model:
 *
 *   mnist-log-c4.lsq: 93.0% (930/1000), 3 layers, arena 4223 bytes
 *
 * Exits 1 on any failed call (printing lsqr_last_error()), 2 on bad usage
 * or an unreadable test set. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsqr.h"

struct test_set {
    unsigned char *bytes; /* the whole file */
    size_t count, pixels;
    const unsigned char *records; /* count records of pixels + 1 bytes */
};

static uint32_t read_u32le(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Reads and checks the test set; 0 on success. */
static int load_test_set(const char *path, struct test_set *set) {
    FILE *f = fopen(path, "rb");
    long len;
    size_t n;
    memset(set, 0, sizeof *set);
    if (f == NULL) {
        perror(path);
        return -1;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        perror(path);
        fclose(f);
        return -1;
    }
    set->bytes = malloc(len > 0 ? (size_t)len : 1);
    n = set->bytes == NULL ? 0 : fread(set->bytes, 1, (size_t)len, f);
    fclose(f);
    if (set->bytes == NULL || n != (size_t)len) {
        fprintf(stderr, "%s: cannot read the file\n", path);
        return -1;
    }
    if (n < 16 || memcmp(set->bytes, "LSQMNIST", 8) != 0) {
        fprintf(stderr, "%s: not an LSQMNIST test set\n", path);
        return -1;
    }
    set->count = read_u32le(set->bytes + 8);
    set->pixels = read_u32le(set->bytes + 12);
    if (set->pixels == 0 || (n - 16) / (set->pixels + 1) < set->count) {
        fprintf(stderr, "%s: %zu images of %zu pixels do not fit in %zu bytes\n", path,
                set->count, set->pixels, n);
        return -1;
    }
    set->records = set->bytes + 16;
    return 0;
}

/* The file name without its directories. */
static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash != NULL ? slash + 1 : path;
}

static size_t element_count(size_t ndim, const size_t *dims) {
    size_t i, n = 1;
    for (i = 0; i < ndim; i++) n *= dims[i];
    return n;
}

/* Runs one model on the test set and prints its line; 0 on success. */
static int evaluate(const char *path, const struct test_set *set) {
    lsqr_model *model = NULL;
    lsqr_micro *micro = NULL;
    void *arena = NULL;
    float *x = NULL, *logits = NULL;
    size_t arena_len = 0, layers = 0, ndim = 0, dims[LSQR_MAX_DIMS];
    size_t in_len, out_len = 0, i, p, l, best, correct = 0;
    const char *step = "lsqr_model_open";
    lsqr_status s;
    int rc = 1;

    s = lsqr_model_open(path, &model);
    if (s == LSQR_STATUS_OK) {
        step = "lsqr_micro_arena_size";
        s = lsqr_micro_arena_size(model, &arena_len);
    }
    if (s == LSQR_STATUS_OK) {
        arena = malloc(arena_len);
        if (arena == NULL) {
            fprintf(stderr, "%s: cannot allocate %zu bytes of arena\n", path, arena_len);
            goto done;
        }
        step = "lsqr_micro_load";
        s = lsqr_micro_load(model, arena, arena_len, &micro);
    }
    if (s == LSQR_STATUS_OK) {
        step = "lsqr_micro_layer_count";
        s = lsqr_micro_layer_count(micro, &layers);
    }
    if (s == LSQR_STATUS_OK) {
        step = "lsqr_micro_output_shape";
        s = lsqr_micro_output_shape(micro, 0, &ndim, dims);
        out_len = element_count(ndim, dims);
    }
    if (s == LSQR_STATUS_OK) {
        step = "lsqr_micro_input_shape";
        s = lsqr_micro_input_shape(micro, 0, &ndim, dims);
    }
    if (s != LSQR_STATUS_OK) goto failed;
    in_len = element_count(ndim, dims);
    if (in_len != set->pixels || out_len == 0) {
        fprintf(stderr, "%s: the model takes %zu values and gives %zu; the images have %zu pixels\n",
                path, in_len, out_len, set->pixels);
        goto done;
    }
    x = malloc(in_len * sizeof *x);
    logits = malloc(out_len * sizeof *logits);
    if (x == NULL || logits == NULL) {
        fprintf(stderr, "%s: out of memory\n", path);
        goto done;
    }

    for (i = 0; i < set->count; i++) {
        const unsigned char *record = set->records + i * (set->pixels + 1);
        for (p = 0; p < in_len; p++) x[p] = (float)record[p] / 255.0f;
        step = "lsqr_micro_set_input";
        s = lsqr_micro_set_input(micro, 0, x, in_len);
        for (l = 0; s == LSQR_STATUS_OK && l < layers; l++) {
            step = "lsqr_micro_run_layer";
            s = lsqr_micro_run_layer(micro, l);
        }
        if (s == LSQR_STATUS_OK) {
            step = "lsqr_micro_get_output";
            s = lsqr_micro_get_output(micro, 0, logits, out_len);
        }
        if (s != LSQR_STATUS_OK) goto failed;
        best = 0;
        for (p = 1; p < out_len; p++)
            if (logits[p] > logits[best]) best = p;
        correct += best == record[set->pixels];
    }
    printf("%s: %.1f%% (%zu/%zu), %zu layers, arena %zu bytes\n", base_name(path),
           set->count > 0 ? 100.0 * (double)correct / (double)set->count : 0.0, correct,
           set->count, layers, arena_len);
    rc = 0;
    goto done;

failed:
    fprintf(stderr, "%s: %s: %s: %s\n", path, step, lsqr_status_str(s), lsqr_last_error());
done:
    /* The runner first, then its arena and model (which it borrows). */
    lsqr_micro_free(micro);
    free(arena);
    lsqr_model_free(model);
    free(x);
    free(logits);
    return rc;
}

int main(int argc, char **argv) {
    const char *test_path = NULL;
    struct test_set set;
    int i, first = 1, rc = 0;

    if (argc >= 3 && strcmp(argv[1], "--test") == 0) {
        test_path = argv[2];
        first = 3;
    }
    if (test_path == NULL || first >= argc) {
        fprintf(stderr, "usage: %s --test mnist-test.bin MODEL.lsq...\n", argv[0]);
        return 2;
    }
    if (load_test_set(test_path, &set) != 0) {
        free(set.bytes);
        return 2;
    }
    for (i = first; i < argc && rc == 0; i++) rc = evaluate(argv[i], &set);
    free(set.bytes);
    return rc;
}
