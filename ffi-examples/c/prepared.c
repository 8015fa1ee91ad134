/* prepared: the model's `fc` and `conv` layers through prepared weights
 * (lsqr_weight_prepare once, then lsqr_weight_linear / lsqr_weight_conv2d
 * repeatedly), checked against lsqr_linear / lsqr_conv2d bit for bit; the
 * exact option against a naive loop over the dequantized weight; NULL
 * arguments, a wrong shape and lsqr_weight_free(NULL). Exits 1 on any
 * mismatch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsqr.h"

#define BATCH_MAX 3

static int failed(const char *what, lsqr_status s) {
    fprintf(stderr, "%s: %s: %s\n", what, lsqr_status_str(s), lsqr_last_error());
    return 1;
}

/* Bit for bit: the same floats, compared as bytes. */
static int same(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof *a) == 0;
}

int main(int argc, char **argv) {
    lsqr_model *model = NULL;
    const lsqr_tensor *fc_w = NULL, *fc_b = NULL, *conv_w = NULL, *conv_b = NULL;
    lsqr_weight *fc = NULL, *conv = NULL, *bad = (lsqr_weight *)&argc;
    lsqr_tensor_info info;
    lsqr_conv2d_params params = {{2, 2}, {1, 1}, {1, 1}, 1};
    size_t in_shape[4] = {2, 3, 8, 8}, out_shape[4], out_shape2[4], out_f, in_f, batch, i, n;
    float *x = NULL, *y = NULL, *want = NULL, *wf = NULL, *bf = NULL;
    float *img = NULL, *conv_y = NULL, *conv_want = NULL;
    double worst = 0;
    bool exact = true;
    lsqr_status s;
    int rc = 1, round;

    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.lsq\n", argv[0]);
        return 2;
    }
    s = lsqr_model_open(argv[1], &model);
    if (s == LSQR_STATUS_OK) s = lsqr_model_find_tensor(model, "fc.weight", &fc_w);
    if (s == LSQR_STATUS_OK) s = lsqr_model_find_tensor(model, "fc.bias", &fc_b);
    if (s == LSQR_STATUS_OK) s = lsqr_model_find_tensor(model, "conv.weight", &conv_w);
    if (s == LSQR_STATUS_OK) s = lsqr_model_find_tensor(model, "conv.bias", &conv_b);
    if (s == LSQR_STATUS_OK) s = lsqr_tensor_get_info(fc_w, &info);
    if (s != LSQR_STATUS_OK) {
        failed("open", s);
        goto done;
    }
    out_f = info.dims[0];
    in_f = info.dims[1];

    /* Prepared once; the model stays open until both are freed. */
    s = lsqr_weight_prepare(fc_w, fc_b, &fc);
    if (s == LSQR_STATUS_OK) s = lsqr_weight_prepare(conv_w, conv_b, &conv);
    if (s != LSQR_STATUS_OK) {
        failed("lsqr_weight_prepare", s);
        goto done;
    }
    s = lsqr_weight_is_exact(fc, &exact);
    if (s != LSQR_STATUS_OK) {
        failed("lsqr_weight_is_exact", s);
        goto done;
    }
    printf("fc [%zu x %zu] prepared; linear runs the %s path\n", out_f, in_f,
           exact ? "exact f32" : "integer");

    x = malloc(BATCH_MAX * in_f * sizeof *x);
    y = malloc(BATCH_MAX * out_f * sizeof *y);
    want = malloc(BATCH_MAX * out_f * sizeof *want);
    wf = malloc(out_f * in_f * sizeof *wf);
    bf = malloc(out_f * sizeof *bf);
    if (x == NULL || y == NULL || want == NULL || wf == NULL || bf == NULL) goto done;
    for (i = 0; i < BATCH_MAX * in_f; i++) x[i] = (float)sin(0.37 * (double)i);

    /* The prepared product equals lsqr_linear's, call after call. */
    for (round = 0; round < 3; round++) {
        for (batch = 1; batch <= BATCH_MAX; batch += 2) {
            s = lsqr_linear(fc_w, fc_b, x, batch, want);
            if (s != LSQR_STATUS_OK) {
                failed("lsqr_linear", s);
                goto done;
            }
            s = lsqr_weight_linear(fc, x, batch, y);
            if (s != LSQR_STATUS_OK) {
                failed("lsqr_weight_linear", s);
                goto done;
            }
            if (!same(y, want, batch * out_f)) {
                fprintf(stderr, "batch %zu: lsqr_weight_linear differs from lsqr_linear\n", batch);
                goto done;
            }
        }
    }
    printf("lsqr_weight_linear equals lsqr_linear bit for bit (batch 1 and 3, 3 rounds)\n");

    /* The exact option: the f32 table path, against a naive loop. */
    s = lsqr_weight_set_exact(fc, true);
    if (s == LSQR_STATUS_OK) s = lsqr_weight_is_exact(fc, &exact);
    if (s == LSQR_STATUS_OK) s = lsqr_weight_linear(fc, x, 1, y);
    if (s == LSQR_STATUS_OK) s = lsqr_tensor_dequantize(fc_w, wf, out_f * in_f);
    if (s == LSQR_STATUS_OK) s = lsqr_tensor_dequantize(fc_b, bf, out_f);
    if (s != LSQR_STATUS_OK || !exact) {
        failed("exact option", s);
        goto done;
    }
    for (n = 0; n < out_f; n++) {
        double ref = bf[n], err;
        for (i = 0; i < in_f; i++) ref += (double)wf[n * in_f + i] * x[i];
        err = fabs(ref - y[n]);
        worst = err > worst ? err : worst;
        if (err > 1e-5 + 1e-4 * fabs(ref)) {
            fprintf(stderr, "exact output %zu: %g vs %g\n", n, y[n], ref);
            goto done;
        }
    }
    printf("exact: y[0] = %+.6f, worst |error| vs the naive loop %.2e\n", y[0], worst);

    /* conv2d: the prepared weight against lsqr_conv2d. */
    s = lsqr_weight_conv2d_output_shape(conv, &params, in_shape, out_shape);
    if (s == LSQR_STATUS_OK) s = lsqr_conv2d_output_shape(conv_w, &params, in_shape, out_shape2);
    if (s != LSQR_STATUS_OK || memcmp(out_shape, out_shape2, sizeof out_shape) != 0) {
        failed("conv2d output shape", s);
        goto done;
    }
    n = out_shape[0] * out_shape[1] * out_shape[2] * out_shape[3];
    img = malloc(in_shape[0] * in_shape[1] * in_shape[2] * in_shape[3] * sizeof *img);
    conv_y = malloc(n * sizeof *conv_y);
    conv_want = malloc(n * sizeof *conv_want);
    if (img == NULL || conv_y == NULL || conv_want == NULL) goto done;
    for (i = 0; i < in_shape[0] * in_shape[1] * in_shape[2] * in_shape[3]; i++) {
        img[i] = (float)cos(0.11 * (double)i);
    }
    s = lsqr_conv2d(conv_w, conv_b, &params, img, in_shape, conv_want, n);
    for (round = 0; round < 2 && s == LSQR_STATUS_OK; round++) {
        s = lsqr_weight_conv2d(conv, &params, img, in_shape, conv_y, n);
        if (s == LSQR_STATUS_OK && !same(conv_y, conv_want, n)) {
            fprintf(stderr, "lsqr_weight_conv2d differs from lsqr_conv2d\n");
            goto done;
        }
    }
    if (s != LSQR_STATUS_OK) {
        failed("conv2d", s);
        goto done;
    }
    printf("conv [%zu, %zu, %zu, %zu]: lsqr_weight_conv2d equals lsqr_conv2d bit for bit\n",
           out_shape[0], out_shape[1], out_shape[2], out_shape[3]);

    /* Errors: NULL arguments, shapes, outputs untouched. */
    if (lsqr_weight_linear(NULL, x, 1, y) != LSQR_STATUS_NULL_ARGUMENT ||
        lsqr_weight_prepare(NULL, NULL, &bad) != LSQR_STATUS_NULL_ARGUMENT ||
        bad != (lsqr_weight *)&argc || lsqr_weight_set_exact(NULL, false) != LSQR_STATUS_NULL_ARGUMENT ||
        lsqr_weight_linear(conv, x, 1, y) != LSQR_STATUS_SHAPE_MISMATCH ||
        strstr(lsqr_last_error(), "conv.weight") == NULL ||
        lsqr_weight_prepare(fc_b, NULL, &bad) != LSQR_STATUS_SHAPE_MISMATCH ||
        bad != (lsqr_weight *)&argc) {
        fprintf(stderr, "an error case did not fail as expected: %s\n", lsqr_last_error());
        goto done;
    }
    lsqr_weight_free(NULL);
    printf("errors: NULL arguments and shapes refused; lsqr_weight_free(NULL) is a no-op\n");
    rc = 0;

done:
    /* The weights go before the model they read. */
    lsqr_weight_free(fc);
    lsqr_weight_free(conv);
    lsqr_model_free(model);
    free(x);
    free(y);
    free(want);
    free(wf);
    free(bf);
    free(img);
    free(conv_y);
    free(conv_want);
    return rc;
}
