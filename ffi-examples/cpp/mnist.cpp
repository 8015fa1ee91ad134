// mnist (C++17): the C example's MNIST evaluation with RAII. The model and
// the runner are std::unique_ptr with lsqr_model_free / lsqr_micro_free as
// deleters, the arena a std::vector<unsigned char> that outlives the runner,
// and every status goes through check(), which throws with
// lsqr_last_error().
//
//   mnist_cpp --test mnist-test.bin MODEL.lsq...
//
// Prints the same line per model as c/mnist.c. This one runs the whole
// graph with lsqr_micro_run and reads the logits in place with
// lsqr_micro_borrow_output, so the two programs cover both ways.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "lsqr.h"

namespace {

struct ModelDeleter {
    void operator()(lsqr_model *m) const noexcept { lsqr_model_free(m); }
};
using Model = std::unique_ptr<lsqr_model, ModelDeleter>;

struct MicroDeleter {
    void operator()(lsqr_micro *m) const noexcept { lsqr_micro_free(m); }
};
using MicroPtr = std::unique_ptr<lsqr_micro, MicroDeleter>;

class Error : public std::runtime_error {
  public:
    Error(lsqr_status s, const std::string &what)
        : std::runtime_error(what + ": " + lsqr_status_str(s) + ": " + lsqr_last_error()),
          status(s) {}
    lsqr_status status;
};

void check(lsqr_status s, const std::string &what) {
    if (s != LSQR_STATUS_OK) throw Error(s, what);
}

Model open_model(const std::string &path) {
    lsqr_model *raw = nullptr;
    check(lsqr_model_open(path.c_str(), &raw), path);
    return Model(raw);
}

// A runner with its arena. Members are destroyed in reverse order, so the
// runner goes before the arena it lives in; the model must outlive both.
class Micro {
  public:
    explicit Micro(const lsqr_model *model) {
        std::size_t len = 0;
        check(lsqr_micro_arena_size(model, &len), "lsqr_micro_arena_size");
        arena_.resize(len);
        lsqr_micro *raw = nullptr;
        check(lsqr_micro_load(model, arena_.data(), arena_.size(), &raw), "lsqr_micro_load");
        micro_.reset(raw);
    }

    std::size_t arena_size() const { return arena_.size(); }

    std::size_t layers() const {
        std::size_t n = 0;
        check(lsqr_micro_layer_count(micro_.get(), &n), "lsqr_micro_layer_count");
        return n;
    }

    std::size_t input_len(std::size_t i) const {
        return elements(lsqr_micro_input_shape, i, "lsqr_micro_input_shape");
    }

    std::size_t output_len(std::size_t i) const {
        return elements(lsqr_micro_output_shape, i, "lsqr_micro_output_shape");
    }

    void set_input(std::size_t i, const std::vector<float> &x) {
        check(lsqr_micro_set_input(micro_.get(), i, x.data(), x.size()), "lsqr_micro_set_input");
    }

    void run() { check(lsqr_micro_run(micro_.get()), "lsqr_micro_run"); }

    // A view of output i inside the arena, valid until the next run.
    std::pair<const float *, std::size_t> output(std::size_t i) const {
        const float *data = nullptr;
        std::size_t len = 0;
        check(lsqr_micro_borrow_output(micro_.get(), i, &data, &len), "lsqr_micro_borrow_output");
        return {data, len};
    }

  private:
    using ShapeFn = lsqr_status (*)(const lsqr_micro *, std::size_t, std::size_t *, std::size_t *);

    std::size_t elements(ShapeFn f, std::size_t i, const char *what) const {
        std::size_t ndim = 0, dims[LSQR_MAX_DIMS] = {};
        check(f(micro_.get(), i, &ndim, dims), what);
        std::size_t n = 1;
        for (std::size_t d = 0; d < ndim; d++) n *= dims[d];
        return n;
    }

    std::vector<unsigned char> arena_;
    MicroPtr micro_;
};

struct TestSet {
    std::vector<unsigned char> bytes;
    std::size_t count = 0, pixels = 0;

    const unsigned char *record(std::size_t i) const { return &bytes[16 + i * (pixels + 1)]; }
};

std::uint32_t read_u32le(const unsigned char *p) {
    return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 |
           std::uint32_t(p[3]) << 24;
}

TestSet load_test_set(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(path + ": cannot open");
    TestSet set;
    set.bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (set.bytes.size() < 16 || !std::equal(set.bytes.begin(), set.bytes.begin() + 8, "LSQMNIST"))
        throw std::runtime_error(path + ": not an LSQMNIST test set");
    set.count = read_u32le(&set.bytes[8]);
    set.pixels = read_u32le(&set.bytes[12]);
    if (set.pixels == 0 || (set.bytes.size() - 16) / (set.pixels + 1) < set.count)
        throw std::runtime_error(path + ": truncated");
    return set;
}

void evaluate(const std::string &path, const TestSet &set) {
    Model model = open_model(path);
    Micro micro(model.get());
    const std::size_t in_len = micro.input_len(0);
    if (in_len != set.pixels || micro.output_len(0) == 0)
        throw std::runtime_error(path + ": the model does not take " + std::to_string(set.pixels) +
                                 " pixels");
    std::vector<float> x(in_len);
    std::size_t correct = 0;
    for (std::size_t i = 0; i < set.count; i++) {
        const unsigned char *r = set.record(i);
        std::transform(r, r + in_len, x.begin(), [](unsigned char p) { return float(p) / 255.0f; });
        micro.set_input(0, x);
        micro.run();
        auto [logits, len] = micro.output(0);
        const std::size_t best = std::size_t(std::max_element(logits, logits + len) - logits);
        correct += best == r[set.pixels];
    }
    const std::string name = path.substr(path.find_last_of('/') + 1);
    std::printf("%s: %.1f%% (%zu/%zu), %zu layers, arena %zu bytes\n", name.c_str(),
                set.count > 0 ? 100.0 * double(correct) / double(set.count) : 0.0, correct,
                set.count, micro.layers(), micro.arena_size());
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 4 || std::string(argv[1]) != "--test") {
        std::fprintf(stderr, "usage: %s --test mnist-test.bin MODEL.lsq...\n", argv[0]);
        return 2;
    }
    TestSet set;
    try {
        set = load_test_set(argv[2]);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 2;
    }
    for (int i = 3; i < argc; i++) {
        try {
            evaluate(argv[i], set);
        } catch (const std::exception &e) {
            std::fprintf(stderr, "%s: %s\n", argv[i], e.what());
            return 1;
        }
    }
    return 0;
}
