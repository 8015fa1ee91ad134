/* magika: classify files with a quantized Magika model (Google's file-type
 * detector) through the micro runtime.
 *
 *   magika MODEL.lsq CONFIG.json FILE...
 *
 * MODEL.lsq is the ONNX model quantized with its graph,
 *   lsqr quantize model.onnx -o magika.lsq --codec lut --bits 8 \
 *       --input-shape bytes=1,2048
 * and CONFIG.json the package's config.min.json, whose
 * `target_labels_space` names the model's outputs (both from
 * `bash scripts/fetch-models.sh`, in ~/.cache/lsqr-models/magika).
 *
 * The features are those of examples/support/magika.rs, line for line, and
 * the output is that of examples/magika.rs (`make magika` diffs the two):
 *
 *   README.md: markdown 0.9990
 *   empty.txt: too small (0 bytes)
 *   missing: error: No such file or directory (os error 2)
 *
 * Exits 1 on any failed lsqr call (printing lsqr_last_error()) or a bad
 * config, 2 on bad usage. A file that cannot be read gets its error line
 * and the others go on, as in the Rust example. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsqr.h"

/* Bytes read from each end of a file. */
#define BLOCK_SIZE 4096
/* Features from the start, then from the end. */
#define BEG_SIZE 1024
#define END_SIZE 1024
#define INPUT_LEN (BEG_SIZE + END_SIZE)
/* Fills the features a short file does not have. */
#define PADDING_TOKEN 256
/* Smaller files are not given to the model. */
#define MIN_FILE_SIZE 8

/* Python's `bytes.strip()` whitespace. */
static int is_space(unsigned char b) {
    return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == 0x0b || b == 0x0c;
}

/* The model input for a file's `len` bytes: the first BEG_SIZE bytes of its
 * first block with leading whitespace stripped (padded after), then the
 * last END_SIZE bytes of its last block with trailing whitespace stripped
 * (padded before). Writes INPUT_LEN floats. */
static void features(const unsigned char *content, size_t len, float *out) {
    size_t n = len < BLOCK_SIZE ? len : BLOCK_SIZE;
    const unsigned char *beg = content, *end = content + (len - n);
    size_t beg_len = n, end_len = n, i, tail_len;
    while (beg_len > 0 && is_space(beg[0])) {
        beg++;
        beg_len--;
    }
    while (end_len > 0 && is_space(end[end_len - 1])) end_len--;
    for (i = 0; i < INPUT_LEN; i++) out[i] = (float)PADDING_TOKEN;
    for (i = 0; i < BEG_SIZE && i < beg_len; i++) out[i] = (float)beg[i];
    tail_len = end_len < END_SIZE ? end_len : END_SIZE;
    for (i = 0; i < tail_len; i++)
        out[INPUT_LEN - tail_len + i] = (float)end[end_len - tail_len + i];
}

/* The labels of the model's outputs: `target_labels_space` of the
 * package's config.min.json, a list of strings. A hand-written scan (the
 * list holds plain names), as in examples/support/magika.rs. */
struct labels {
    char *text;    /* a copy of the list, split in place */
    char **names;  /* count pointers into text */
    size_t count;
};

static int is_trim_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Fills `labels` from the config text; 0 on success, -1 with a message on
 * stderr otherwise. `labels` is freed by free_labels either way. */
static int parse_labels(const char *config, struct labels *labels) {
    static const char key[] = "\"target_labels_space\"";
    const char *at = strstr(config, key), *rest, *open, *close;
    size_t len, cap = 0, i;
    char *item, *next;
    memset(labels, 0, sizeof *labels);
    if (at == NULL) {
        fprintf(stderr, "config has no target_labels_space\n");
        return -1;
    }
    rest = at + strlen(key);
    open = strchr(rest, '[');
    close = strchr(rest, ']');
    if (open == NULL) {
        fprintf(stderr, "target_labels_space is not a list\n");
        return -1;
    }
    if (close == NULL || close < open) {
        fprintf(stderr, "target_labels_space is not closed\n");
        return -1;
    }
    len = (size_t)(close - open - 1);
    labels->text = malloc(len + 1);
    if (labels->text == NULL) {
        fprintf(stderr, "out of memory\n");
        return -1;
    }
    memcpy(labels->text, open + 1, len);
    labels->text[len] = '\0';
    for (i = 0; i < len; i++) cap += labels->text[i] == ',';
    labels->names = malloc((cap + 1) * sizeof *labels->names);
    if (labels->names == NULL) {
        fprintf(stderr, "out of memory\n");
        return -1;
    }
    for (item = labels->text; item != NULL; item = next) {
        char *last;
        next = strchr(item, ',');
        if (next != NULL) *next++ = '\0';
        /* trim whitespace, then every quote at either end */
        while (is_trim_space(*item)) item++;
        last = item + strlen(item);
        while (last > item && is_trim_space(last[-1])) last--;
        while (item < last && *item == '"') item++;
        while (last > item && last[-1] == '"') last--;
        *last = '\0';
        if (*item != '\0') labels->names[labels->count++] = item;
    }
    if (labels->count == 0) {
        fprintf(stderr, "target_labels_space is empty\n");
        return -1;
    }
    return 0;
}

static void free_labels(struct labels *labels) {
    free(labels->names);
    free(labels->text);
}

/* Reads a whole file into a malloc'ed buffer (*data, *len; *data is NULL
 * for an empty file). On failure returns the errno value, with *data
 * freed. */
static int read_file(const char *path, unsigned char **data, size_t *len) {
    FILE *f;
    size_t cap = 0, got;
    unsigned char *buf = NULL, *grown;
    int err = 0;
    *data = NULL;
    *len = 0;
    errno = 0;
    f = fopen(path, "rb");
    if (f == NULL) return errno != 0 ? errno : EIO;
    for (;;) {
        if (*len == cap) {
            cap = cap == 0 ? 65536 : cap * 2;
            grown = realloc(buf, cap);
            if (grown == NULL) {
                err = ENOMEM;
                break;
            }
            buf = grown;
        }
        errno = 0;
        got = fread(buf + *len, 1, cap - *len, f);
        *len += got;
        if (got == 0) {
            if (ferror(f)) err = errno != 0 ? errno : EIO;
            break;
        }
    }
    fclose(f);
    if (err != 0) {
        free(buf);
        *len = 0;
        return err;
    }
    if (*len == 0) {
        free(buf);
        buf = NULL;
    }
    *data = buf;
    return 0;
}

/* Opens the model and runs it on every file; returns the exit code. */
static int classify(const char *model_path, const struct labels *labels, char **files,
                    int file_count) {
    lsqr_model *model = NULL;
    lsqr_micro *micro = NULL;
    void *arena = NULL;
    size_t arena_len = 0, inputs = 0, outputs = 0, ndim = 0, dims[LSQR_MAX_DIMS];
    size_t scores_len = 0, i;
    const float *scores;
    float x[INPUT_LEN];
    const char *step = "lsqr_model_open";
    lsqr_status s;
    int f, rc = 1;

    s = lsqr_model_open(model_path, &model);
    if (s == LSQR_STATUS_OK) {
        step = "lsqr_micro_arena_size";
        s = lsqr_micro_arena_size(model, &arena_len);
    }
    if (s == LSQR_STATUS_OK) {
        arena = malloc(arena_len);
        if (arena == NULL) {
            fprintf(stderr, "%s: cannot allocate %zu bytes of arena\n", model_path, arena_len);
            goto done;
        }
        step = "lsqr_micro_load";
        s = lsqr_micro_load(model, arena, arena_len, &micro);
    }
    if (s == LSQR_STATUS_OK) {
        step = "lsqr_micro_input_count";
        s = lsqr_micro_input_count(micro, &inputs);
    }
    if (s == LSQR_STATUS_OK) {
        step = "lsqr_micro_output_count";
        s = lsqr_micro_output_count(micro, &outputs);
    }
    if (s == LSQR_STATUS_OK && inputs == 1) {
        step = "lsqr_micro_input_shape";
        s = lsqr_micro_input_shape(micro, 0, &ndim, dims);
    }
    if (s != LSQR_STATUS_OK) goto failed;
    if (inputs != 1 || ndim != 2 || dims[0] != 1 || dims[1] != INPUT_LEN || outputs < 1) {
        fprintf(stderr, "%s: the model must take one input of shape [1, %d]\n", model_path,
                INPUT_LEN);
        goto done;
    }

    for (f = 0; f < file_count; f++) {
        const char *path = files[f];
        unsigned char *content;
        size_t len, best;
        float best_score;
        int err = read_file(path, &content, &len);
        if (err != 0) {
            /* As Rust prints an io::Error: strerror, then the code. */
            printf("%s: error: %s (os error %d)\n", path, strerror(err), err);
            continue;
        }
        if (len < MIN_FILE_SIZE) {
            printf("%s: too small (%zu bytes)\n", path, len);
            free(content);
            continue;
        }
        features(content, len, x);
        free(content);
        step = "lsqr_micro_set_input";
        s = lsqr_micro_set_input(micro, 0, x, INPUT_LEN);
        if (s == LSQR_STATUS_OK) {
            step = "lsqr_micro_run";
            s = lsqr_micro_run(micro);
        }
        if (s == LSQR_STATUS_OK) {
            /* In place, valid until the next set_input or run. */
            step = "lsqr_micro_borrow_output";
            s = lsqr_micro_borrow_output(micro, 0, &scores, &scores_len);
        }
        if (s != LSQR_STATUS_OK) goto failed;
        if (scores_len != labels->count) {
            fprintf(stderr, "%zu scores for %zu labels\n", scores_len, labels->count);
            goto done;
        }
        /* The largest score, the first on ties (NaN never wins). */
        best = 0;
        best_score = -INFINITY;
        for (i = 0; i < scores_len; i++)
            if (scores[i] > best_score) {
                best = i;
                best_score = scores[i];
            }
        printf("%s: %s %.4f\n", path, labels->names[best], (double)best_score);
    }
    rc = 0;
    goto done;

failed:
    fprintf(stderr, "%s: %s: %s: %s\n", model_path, step, lsqr_status_str(s), lsqr_last_error());
done:
    /* The runner first, then its arena and model (which it borrows). */
    lsqr_micro_free(micro);
    free(arena);
    lsqr_model_free(model);
    return rc;
}

int main(int argc, char **argv) {
    unsigned char *config = NULL, *text;
    size_t config_len = 0;
    struct labels labels;
    int err, rc;

    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.lsq CONFIG.json FILE...\n", argv[0]);
        return 2;
    }
    err = read_file(argv[2], &config, &config_len);
    if (err != 0) {
        fprintf(stderr, "%s: %s\n", argv[2], strerror(err));
        return 1;
    }
    /* NUL-terminated for the scan. */
    text = realloc(config, config_len + 1);
    if (text == NULL) {
        free(config);
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    text[config_len] = '\0';
    if (parse_labels((const char *)text, &labels) != 0) {
        free_labels(&labels);
        free(text);
        return 1;
    }
    free(text);
    rc = classify(argv[1], &labels, argv + 3, argc - 3);
    free_labels(&labels);
    return rc;
}
