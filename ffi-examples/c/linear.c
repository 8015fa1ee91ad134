/* linear: run the model's `fc` layer (fc.weight [out, in] quantized,
 * fc.bias raw) through lsqr_linear for batch 1 and 3, and compare with a
 * naive loop over the dequantized weight. Exits 1 on a mismatch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "lsqr.h"

static float *dequantized(const lsqr_tensor *t, size_t *count) {
    lsqr_tensor_info info;
    float *out;
    if (lsqr_tensor_get_info(t, &info) != LSQR_STATUS_OK) return NULL;
    out = malloc(info.element_count * sizeof *out);
    if (out != NULL && lsqr_tensor_dequantize(t, out, info.element_count) != LSQR_STATUS_OK) {
        free(out);
        return NULL;
    }
    *count = info.element_count;
    return out;
}

int main(int argc, char **argv) {
    lsqr_model *model = NULL;
    const lsqr_tensor *w = NULL, *b = NULL;
    lsqr_tensor_info info;
    float *wf = NULL, *bf = NULL, *x = NULL, *y = NULL;
    size_t out_f, in_f, wn = 0, bn = 0, batch, n, r, c, bad = 0;
    double worst = 0;
    lsqr_status s;
    int rc = 1;

    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.lsq\n", argv[0]);
        return 2;
    }
    s = lsqr_model_open(argv[1], &model);
    if (s == LSQR_STATUS_OK) s = lsqr_model_find_tensor(model, "fc.weight", &w);
    if (s == LSQR_STATUS_OK) s = lsqr_model_find_tensor(model, "fc.bias", &b);
    if (s == LSQR_STATUS_OK) s = lsqr_tensor_get_info(w, &info);
    if (s != LSQR_STATUS_OK) {
        fprintf(stderr, "%s: %s\n", lsqr_status_str(s), lsqr_last_error());
        goto done;
    }
    out_f = info.dims[0];
    in_f = info.dims[1];
    wf = dequantized(w, &wn);
    bf = dequantized(b, &bn);
    x = malloc(3 * in_f * sizeof *x);
    y = malloc(3 * out_f * sizeof *y);
    if (wf == NULL || bf == NULL || x == NULL || y == NULL || wn != out_f * in_f || bn != out_f) {
        fprintf(stderr, "setup failed: %s\n", lsqr_last_error());
        goto done;
    }
    for (c = 0; c < 3 * in_f; c++) x[c] = (float)sin(0.37 * (double)c);

    for (batch = 1; batch <= 3; batch += 2) {
        s = lsqr_linear(w, b, x, batch, y);
        if (s != LSQR_STATUS_OK) {
            fprintf(stderr, "lsqr_linear: %s: %s\n", lsqr_status_str(s), lsqr_last_error());
            goto done;
        }
        for (n = 0; n < batch; n++) {
            for (r = 0; r < out_f; r++) {
                double ref = bf[r], err;
                for (c = 0; c < in_f; c++) ref += (double)wf[r * in_f + c] * x[n * in_f + c];
                err = fabs(ref - y[n * out_f + r]);
                worst = err > worst ? err : worst;
                if (err > 1e-4 + 1e-4 * fabs(ref)) bad++;
            }
        }
        printf("fc [%zu x %zu], batch %zu: y[0] = %+.6f, worst |error| so far %.2e\n", out_f,
               in_f, batch, y[0], worst);
    }
    if (bad) {
        fprintf(stderr, "%zu outputs differ from the naive loop\n", bad);
        goto done;
    }
    printf("lsqr_linear matches the naive loop\n");
    rc = 0;

done:
    free(wf);
    free(bf);
    free(x);
    free(y);
    lsqr_model_free(model);
    return rc;
}
