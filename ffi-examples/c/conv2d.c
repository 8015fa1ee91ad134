/* conv2d: run the model's quantized conv.weight [8, 3, 3, 3] with its f16
 * conv.bias on a 2x3x8x8 input, stride 2, padding 1, through
 * lsqr_conv2d_output_shape and lsqr_conv2d, and compare with a direct loop
 * over the dequantized weight. Exits 1 on a mismatch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "lsqr.h"

int main(int argc, char **argv) {
    lsqr_model *model = NULL;
    const lsqr_tensor *w = NULL, *b = NULL;
    lsqr_tensor_info wi, bi;
    const lsqr_conv2d_params params = {{2, 2}, {1, 1}, {1, 1}, 1};
    const size_t in_shape[4] = {2, 3, 8, 8};
    size_t out_shape[4], out_len, in_len = 2 * 3 * 8 * 8, i, bad = 0;
    size_t n, o, y, x, c, u, v;
    float *wf = NULL, *bf = NULL, *input = NULL, *output = NULL;
    lsqr_status s;
    int rc = 1;

    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.lsq\n", argv[0]);
        return 2;
    }
    s = lsqr_model_open(argv[1], &model);
    if (s == LSQR_STATUS_OK) s = lsqr_model_find_tensor(model, "conv.weight", &w);
    if (s == LSQR_STATUS_OK) s = lsqr_model_find_tensor(model, "conv.bias", &b);
    if (s == LSQR_STATUS_OK) s = lsqr_tensor_get_info(w, &wi);
    if (s == LSQR_STATUS_OK) s = lsqr_tensor_get_info(b, &bi);
    if (s == LSQR_STATUS_OK) s = lsqr_conv2d_output_shape(w, &params, in_shape, out_shape);
    if (s != LSQR_STATUS_OK) goto error;
    out_len = out_shape[0] * out_shape[1] * out_shape[2] * out_shape[3];
    wf = malloc(wi.element_count * sizeof *wf);
    bf = malloc(bi.element_count * sizeof *bf);
    input = malloc(in_len * sizeof *input);
    output = malloc(out_len * sizeof *output);
    if (wf == NULL || bf == NULL || input == NULL || output == NULL) goto done;
    for (i = 0; i < in_len; i++) input[i] = (float)cos(0.21 * (double)i);
    s = lsqr_tensor_dequantize(w, wf, wi.element_count);
    if (s == LSQR_STATUS_OK) s = lsqr_tensor_dequantize(b, bf, bi.element_count);
    if (s == LSQR_STATUS_OK) s = lsqr_conv2d(w, b, &params, input, in_shape, output, out_len);
    if (s != LSQR_STATUS_OK) goto error;

    for (n = 0; n < out_shape[0]; n++)
        for (o = 0; o < out_shape[1]; o++)
            for (y = 0; y < out_shape[2]; y++)
                for (x = 0; x < out_shape[3]; x++) {
                    double ref = bf[o], got;
                    for (c = 0; c < wi.dims[1]; c++)
                        for (u = 0; u < wi.dims[2]; u++)
                            for (v = 0; v < wi.dims[3]; v++) {
                                /* input row/col, shifted by the padding of 1 */
                                long iy = (long)(y * 2 + u) - 1, ix = (long)(x * 2 + v) - 1;
                                if (iy < 0 || ix < 0 || iy >= 8 || ix >= 8) continue;
                                ref += (double)wf[((o * 3 + c) * 3 + u) * 3 + v] *
                                       input[((n * 3 + c) * 8 + (size_t)iy) * 8 + (size_t)ix];
                            }
                    got = output[((n * out_shape[1] + o) * out_shape[2] + y) * out_shape[3] + x];
                    if (fabs(got - ref) > 1e-4 + 1e-4 * fabs(ref)) bad++;
                }
    printf("conv2d [%zu, %zu, %zu, %zu] -> [%zu, %zu, %zu, %zu]: %zu mismatches\n", in_shape[0],
           in_shape[1], in_shape[2], in_shape[3], out_shape[0], out_shape[1], out_shape[2],
           out_shape[3], bad);
    rc = bad != 0;
    goto done;

error:
    fprintf(stderr, "%s: %s\n", lsqr_status_str(s), lsqr_last_error());
done:
    free(wf);
    free(bf);
    free(input);
    free(output);
    lsqr_model_free(model);
    return rc;
}
