/* corrupt: feed damaged input to liblsqr and check every case fails
 * cleanly with the expected status and a message: flipped bytes (magic,
 * header, tensor data), truncated buffers, a missing path, NULL arguments,
 * unknown names and short buffers. Exits 0 only if every case errored as
 * expected (and, under valgrind, without a memory error). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsqr.h"

static int failures = 0;

/* Checks one call's status, that the last error is set, and prints it. */
static void expect(const char *what, lsqr_status got, lsqr_status want) {
    const char *msg = lsqr_last_error();
    int ok = got == want && msg != NULL && msg[0] != '\0';
    printf("%-4s %-34s %-18s %s\n", ok ? "ok" : "FAIL", what, lsqr_status_str(got), msg);
    if (!ok) {
        fprintf(stderr, "  expected %s\n", lsqr_status_str(want));
        failures++;
    }
}

/* Opens `len` bytes, expecting `want`; the output must stay NULL. */
static void open_bytes(const char *what, const uint8_t *bytes, size_t len, lsqr_status want) {
    lsqr_model *model = NULL;
    expect(what, lsqr_model_open_memory(bytes, len, &model), want);
    if (model != NULL) {
        printf("FAIL %s: output written on failure\n", what);
        failures++;
        lsqr_model_free(model);
    }
}

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long n;
    if (f == NULL) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)n);
        if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
        *len = (size_t)n;
    }
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    uint8_t *good, *bad;
    size_t len = 0, count = 0;
    lsqr_model *model = NULL;
    const lsqr_tensor *t = NULL;
    float small[4];

    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.lsq\n", argv[0]);
        return 2;
    }
    good = read_file(argv[1], &len);
    if (good == NULL || len < 128) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        free(good);
        return 2;
    }
    bad = malloc(len);
    if (bad == NULL) return 2;

    /* Flipped bytes: the magic, inside the header (at the end of the file),
     * and inside the first tensor's data, which only verify reads. */
    memcpy(bad, good, len);
    bad[1] ^= 0xff;
    open_bytes("flipped magic byte", bad, len, LSQR_STATUS_FORMAT);
    memcpy(bad, good, len);
    bad[len - 9] ^= 0x55;
    open_bytes("flipped header byte", bad, len, LSQR_STATUS_FORMAT);
    memcpy(bad, good, len);
    bad[64 + 3] ^= 0x10;
    if (lsqr_model_open_memory(bad, len, &model) != LSQR_STATUS_OK) {
        printf("FAIL flipped data byte: open failed: %s\n", lsqr_last_error());
        failures++;
    } else {
        expect("flipped data byte (verify)", lsqr_model_verify(model), LSQR_STATUS_FORMAT);
        lsqr_model_free(model);
        model = NULL;
    }

    /* Truncated buffers. */
    open_bytes("truncated by 7 bytes", good, len - 7, LSQR_STATUS_FORMAT);
    open_bytes("shorter than the preamble", good, 10, LSQR_STATUS_FORMAT);
    open_bytes("empty", good, 0, LSQR_STATUS_FORMAT);

    /* A missing file. */
    expect("missing path", lsqr_model_open("/nonexistent/model.lsq", &model), LSQR_STATUS_IO);

    /* NULL arguments. */
    expect("open(NULL path)", lsqr_model_open(NULL, &model), LSQR_STATUS_NULL_ARGUMENT);
    expect("open(NULL out)", lsqr_model_open(argv[1], NULL), LSQR_STATUS_NULL_ARGUMENT);
    expect("open_memory(NULL buf)", lsqr_model_open_memory(NULL, len, &model),
           LSQR_STATUS_NULL_ARGUMENT);
    expect("tensor_count(NULL model)", lsqr_model_tensor_count(NULL, &count),
           LSQR_STATUS_NULL_ARGUMENT);
    expect("dequantize(NULL tensor)", lsqr_tensor_dequantize(NULL, small, 4),
           LSQR_STATUS_NULL_ARGUMENT);
    expect("linear(NULL weight)", lsqr_linear(NULL, NULL, small, 1, small),
           LSQR_STATUS_NULL_ARGUMENT);
    lsqr_model_free(NULL); /* a no-op */
    if (model != NULL) {
        printf("FAIL: a failed open wrote its output\n");
        failures++;
    }

    /* Names and buffers on the good model. */
    if (lsqr_model_open_memory(good, len, &model) != LSQR_STATUS_OK) {
        printf("FAIL: the intact model does not open: %s\n", lsqr_last_error());
        failures++;
    } else {
        expect("find_tensor(\"nope\")", lsqr_model_find_tensor(model, "nope", &t),
               LSQR_STATUS_NOT_FOUND);
        expect("tensor_at(out of range)", lsqr_model_tensor_at(model, 1000, &t),
               LSQR_STATUS_NOT_FOUND);
        if (lsqr_model_find_tensor(model, "fc.weight", &t) == LSQR_STATUS_OK) {
            expect("dequantize into 4 floats", lsqr_tensor_dequantize(t, small, 4),
                   LSQR_STATUS_BUFFER_TOO_SMALL);
        } else {
            failures++;
        }
        expect("metadata_get_int(string)",
               lsqr_model_metadata_get_int(model, "model", (int64_t *)(void *)small),
               LSQR_STATUS_TYPE_MISMATCH);
        lsqr_model_free(model);
    }

    free(bad);
    free(good);
    if (failures) {
        fprintf(stderr, "%d case(s) did not fail as expected\n", failures);
        return 1;
    }
    printf("every case failed cleanly\n");
    return 0;
}
