// dequantize_stats (C++17): the C example's statistics with RAII. The
// model is a std::unique_ptr with lsqr_model_free as its deleter, and every
// status goes through check(), which throws with lsqr_last_error().
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "lsqr.h"

namespace {

struct ModelDeleter {
    void operator()(lsqr_model *m) const noexcept { lsqr_model_free(m); }
};
using Model = std::unique_ptr<lsqr_model, ModelDeleter>;

class Error : public std::runtime_error {
  public:
    Error(lsqr_status s, const std::string &what)
        : std::runtime_error(what + ": " + lsqr_status_str(s) + ": " + lsqr_last_error()),
          status(s) {}
    lsqr_status status;
};

void check(lsqr_status s, const char *what) {
    if (s != LSQR_STATUS_OK) throw Error(s, what);
}

Model open_model(const char *path) {
    lsqr_model *raw = nullptr;
    check(lsqr_model_open(path, &raw), path);
    return Model(raw);
}

std::vector<float> dequantize(const lsqr_tensor *t, const lsqr_tensor_info &info) {
    std::vector<float> values(info.element_count);
    check(lsqr_tensor_dequantize(t, values.data(), values.size()), info.name);
    return values;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s MODEL.lsq\n", argv[0]);
        return 2;
    }
    try {
        Model model = open_model(argv[1]);
        std::size_t count = 0;
        check(lsqr_model_tensor_count(model.get(), &count), "tensor count");
        for (std::size_t i = 0; i < count; i++) {
            const lsqr_tensor *t = nullptr;
            lsqr_tensor_info info{};
            check(lsqr_model_tensor_at(model.get(), i, &t), "tensor_at");
            check(lsqr_tensor_get_info(t, &info), "tensor info");
            const std::vector<float> v = dequantize(t, info);
            const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
            const double n = static_cast<double>(v.size());
            const double mean = std::accumulate(v.begin(), v.end(), 0.0) / n;
            double var = 0;
            for (float x : v) var += (x - mean) * (x - mean);
            std::printf("%-12s %6zu values  min %+.5f max %+.5f mean %+.6f std %.6f\n", info.name,
                        v.size(), *lo, *hi, mean, std::sqrt(var / n));
        }
        // Errors are exceptions: a missing tensor throws, the model is
        // still freed by its unique_ptr on the way out.
        try {
            const lsqr_tensor *t = nullptr;
            check(lsqr_model_find_tensor(model.get(), "no.such.tensor", &t), "find_tensor");
            std::fprintf(stderr, "a missing tensor was found\n");
            return 1;
        } catch (const Error &e) {
            if (e.status != LSQR_STATUS_NOT_FOUND) throw;
            std::printf("expected error: %s\n", e.what());
        }
    } catch (const std::exception &e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    return 0;
}
