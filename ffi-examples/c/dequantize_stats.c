/* dequantize_stats: open a .lsq model (path argument), print its metadata
 * and every tensor's description, decode each tensor to float and print
 * min / max / mean / std. Exits non-zero on any lsqr error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "lsqr.h"

static const char *codec_name(lsqr_codec c) {
    switch (c) {
    case LSQR_CODEC_RAW: return "raw";
    case LSQR_CODEC_SEED: return "seed";
    case LSQR_CODEC_LOG: return "log";
    case LSQR_CODEC_UNIFORM: return "uniform";
    case LSQR_CODEC_NF: return "nf";
    case LSQR_CODEC_FP: return "fp";
    case LSQR_CODEC_LUT: return "lut";
    default: return "?";
    }
}

static int fail(const char *what, lsqr_status s) {
    fprintf(stderr, "%s: %s: %s\n", what, lsqr_status_str(s), lsqr_last_error());
    return 1;
}

/* Prints one metadata entry, whatever its type. */
static int print_metadata(const lsqr_model *model, const char *key) {
    lsqr_value_type type;
    lsqr_status s = lsqr_model_metadata_type(model, key, &type);
    if (s != LSQR_STATUS_OK) return fail("metadata type", s);
    printf("  %s = ", key);
    if (type == LSQR_VALUE_TYPE_STRING) {
        size_t needed = 0;
        char *buf;
        /* Size query: BUFFER_TOO_SMALL with `needed` set. */
        s = lsqr_model_metadata_get_string(model, key, NULL, 0, &needed);
        if (s != LSQR_STATUS_BUFFER_TOO_SMALL) return fail("metadata size", s);
        buf = malloc(needed);
        if (buf == NULL) return 1;
        s = lsqr_model_metadata_get_string(model, key, buf, needed, NULL);
        if (s == LSQR_STATUS_OK) printf("\"%s\"\n", buf);
        free(buf);
    } else if (type == LSQR_VALUE_TYPE_INT) {
        int64_t v = 0;
        s = lsqr_model_metadata_get_int(model, key, &v);
        if (s == LSQR_STATUS_OK) printf("%lld\n", (long long)v);
    } else if (type == LSQR_VALUE_TYPE_FLOAT) {
        double v = 0;
        s = lsqr_model_metadata_get_float(model, key, &v);
        if (s == LSQR_STATUS_OK) printf("%g\n", v);
    } else if (type == LSQR_VALUE_TYPE_BOOL) {
        bool v = false;
        s = lsqr_model_metadata_get_bool(model, key, &v);
        if (s == LSQR_STATUS_OK) printf("%s\n", v ? "true" : "false");
    } else if (type == LSQR_VALUE_TYPE_INT_LIST) {
        int64_t v[64];
        size_t n = 0, i;
        s = lsqr_model_metadata_get_int_list(model, key, v, 64, &n);
        if (s == LSQR_STATUS_OK) {
            for (i = 0; i < n; i++) printf("%s%lld", i ? ", " : "[", (long long)v[i]);
            printf("]\n");
        }
    } else {
        double v[64];
        size_t n = 0, i;
        s = lsqr_model_metadata_get_float_list(model, key, v, 64, &n);
        if (s == LSQR_STATUS_OK) {
            for (i = 0; i < n; i++) printf("%s%g", i ? ", " : "[", v[i]);
            printf("]\n");
        }
    }
    return s == LSQR_STATUS_OK ? 0 : fail(key, s);
}

int main(int argc, char **argv) {
    lsqr_model *model = NULL;
    lsqr_status s;
    size_t count = 0, meta = 0, i, k;
    int rc = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.lsq\n", argv[0]);
        return 2;
    }
    printf("liblsqr %s (header %d.%d.%d)\n", lsqr_version(), LSQR_VERSION_MAJOR,
           LSQR_VERSION_MINOR, LSQR_VERSION_PATCH);
    s = lsqr_model_open(argv[1], &model);
    if (s != LSQR_STATUS_OK) return fail(argv[1], s);
    s = lsqr_model_verify(model);
    if (s != LSQR_STATUS_OK) {
        rc = fail("verify", s);
        goto done;
    }

    s = lsqr_model_metadata_count(model, &meta);
    if (s != LSQR_STATUS_OK) {
        rc = fail("metadata count", s);
        goto done;
    }
    printf("metadata (%zu):\n", meta);
    for (i = 0; i < meta && rc == 0; i++) {
        const char *key = NULL;
        s = lsqr_model_metadata_key_at(model, i, &key);
        rc = s == LSQR_STATUS_OK ? print_metadata(model, key) : fail("metadata key", s);
    }

    s = lsqr_model_tensor_count(model, &count);
    if (s != LSQR_STATUS_OK) {
        rc = fail("tensor count", s);
        goto done;
    }
    printf("tensors (%zu):\n", count);
    for (i = 0; i < count && rc == 0; i++) {
        const lsqr_tensor *t = NULL;
        lsqr_tensor_info info;
        float *values;
        double sum = 0, sq = 0, mean, var;
        float lo = INFINITY, hi = -INFINITY;

        s = lsqr_model_tensor_at(model, i, &t);
        if (s == LSQR_STATUS_OK) s = lsqr_tensor_get_info(t, &info);
        if (s != LSQR_STATUS_OK) {
            rc = fail("tensor", s);
            break;
        }
        printf("  %-12s [", info.name);
        for (k = 0; k < info.ndim; k++) printf("%s%zu", k ? ", " : "", info.dims[k]);
        printf("] %s %u-bit", codec_name(info.codec), (unsigned)info.bits);
        if (info.group_size) printf(" g%zu", info.group_size);
        printf(", %llu bytes:", (unsigned long long)info.stored_bytes);

        values = malloc((info.element_count ? info.element_count : 1) * sizeof *values);
        if (values == NULL) {
            rc = 1;
            break;
        }
        s = lsqr_tensor_dequantize(t, values, info.element_count);
        if (s != LSQR_STATUS_OK) {
            free(values);
            rc = fail(info.name, s);
            break;
        }
        for (k = 0; k < info.element_count; k++) {
            float v = values[k];
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
            sum += v;
            sq += (double)v * v;
        }
        free(values);
        mean = info.element_count ? sum / (double)info.element_count : 0.0;
        var = info.element_count ? sq / (double)info.element_count - mean * mean : 0.0;
        printf(" min %+.5f max %+.5f mean %+.6f std %.6f\n", lo, hi, mean, sqrt(var > 0 ? var : 0));
    }

done:
    lsqr_model_free(model);
    return rc;
}
