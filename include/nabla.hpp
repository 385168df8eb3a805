/*
 * nabla.hpp: a thin, header-only C++ layer over nabla's C API, so that
 * code reads as the math it computes:
 *
 *     nb::tape tp;
 *     nb::use_tape on(tp);                        // the thread's current tape
 *     nb::parameter theta = nb::parameter::scalar(0.7), speed = nb::parameter::scalar(20);
 *     nb::tensor vx = speed * cos(theta), vy = speed * sin(theta);
 *     nb::tensor x = nb::scalar(0), y = nb::scalar(0);
 *     for (int i = 0; i < n; i++) {
 *         nb::tensor v = sqrt(vx * vx + vy * vy), kv = v * -k;
 *         x = x + vx * dt;  y = y + vy * dt;
 *         vx = vx + kv * vx * dt;  vy = vy + (kv * vy - g) * dt;
 *     }
 *     nb::backward(x + y);                        // theta.grad(), speed.grad()
 *
 * Each operator or function is one call of the C API, the same one C code
 * would make (x * dt is nb_scale(tp, x, dt), x - g is nb_add_scalar(tp, x,
 * -g), x / s is nb_div by a 0-d tensor), so that the values and gradients
 * are bitwise those of the C code that records the same ops in the same
 * order (tests/test_hpp.cpp checks it).  Mind the order: C++ (as C for a
 * call's arguments) leaves unspecified which operand of f(x) + g(x) is
 * evaluated, so recorded, first; the values are the same either way, but a
 * tensor used by both gets its gradient's two parts added in the other
 * order, which may change its last bit.  Statements fix the order.
 *
 * - nb::tensor is a value type over nb_tensor * (copying it copies the
 *   handle, not the data; it owns nothing: tape tensors live until the
 *   tape's reset, as in C).  It remembers its tape; an op on tensors none
 *   of which lives on a tape (parameters, data on the heap) records on the
 *   thread's current tape (nb::use_tape, a scope; nb::current_tape()).
 * - nb::tape owns an nb_tape (freed by its destructor), nb::parameter a
 *   heap tensor (freed by its), with its gradient; both move, neither
 *   copies.  .get() gives the C handle, to mix in C calls.
 * - Operators + - * / and unary -, with a double on either side; +=, -=,
 *   *=, /= rebind the left side to the new result (nothing is changed in
 *   place).  Math as free functions found by argument-dependent lookup:
 *   exp(x), sqrt(x), pow(x, 3), matmul(a, b), sum(x)...
 * - Comparisons are deleted, not overloaded: `if (x < y)` on tensors would
 *   be a branch decided by the values at record time that the tape does
 *   not record, differentiating only the path taken (as ADOL-C's
 *   operators do silently).  Write x.item() < y.item() to make that
 *   choice visibly, or nb::where, maximum, minimum, clamp for a
 *   differentiable one.
 * - Errors.  Compiled with exceptions (the C++ default), a call that fails
 *   throws nb::error, a std::runtime_error carrying the status and
 *   nabla's message (the op, the shapes, and for the free functions your
 *   file and line); the tape keeps the error as in C until its reset.
 *   With -fno-exceptions, or NABLA_HPP_EXCEPTIONS defined to 0, nothing
 *   throws and errors flow as in C: an errored tensor passes its error on,
 *   check .status() or the tape's status once at the end, and
 *   nb::backward returns the status.  Functions nabla calls back
 *   (nb_recompute's function, custom ops' callbacks, nb_parallel_for's
 *   parts) must catch their exceptions and return the error instead
 *   (nb::no_throw<fn> does it for nb_recompute's): one unwinding through
 *   nabla's C frames skips their cleanup.
 *
 * C++11 or later; warning-free under -Wall -Wextra -pedantic.
 */
#ifndef NABLA_HPP
#define NABLA_HPP

#include "nabla.h"
#include "nabla_op.h" /* nb_op_error: a refusal of the layer's own, as an errored tensor */

#include <cstddef>
#include <initializer_list>
#include <string>
#include <vector>

#ifndef NABLA_HPP_EXCEPTIONS
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#define NABLA_HPP_EXCEPTIONS 1
#else
#define NABLA_HPP_EXCEPTIONS 0
#endif
#endif
#if NABLA_HPP_EXCEPTIONS
#include <stdexcept>
#endif

/* The caller's file and line, as default arguments (GCC and clang: the
 * call site's); operators cannot take them, and their errors name no site. */
#if defined(__GNUC__) || defined(__clang__)
#define NABLA_HPP_SITE const char *file = __builtin_FILE(), int line = __builtin_LINE()
#else
#define NABLA_HPP_SITE const char *file = nullptr, int line = 0
#endif

namespace nb {

#if NABLA_HPP_EXCEPTIONS
/* What a failed call throws: nabla's status and message. */
class error : public std::runtime_error {
  public:
    error(nb_status status, const std::string &message) : std::runtime_error(message), status_(status) {}
    nb_status status() const noexcept { return status_; }

  private:
    nb_status status_;
};
#endif

class tensor;

namespace detail {
inline nb_tape *&current() {
    static thread_local nb_tape *tp = nullptr;
    return tp;
}
/* Throws for a failed status (with exceptions); returns it otherwise. */
inline nb_status check(nb_status st) {
#if NABLA_HPP_EXCEPTIONS
    if (st != NB_OK) throw error(st, nb_last_error());
#endif
    return st;
}
} // namespace detail

/* The thread's current tape (NULL when no nb::use_tape is in force). */
inline nb_tape *current_tape() noexcept { return detail::current(); }

/* A tape, freed with the object. */
class tape {
  public:
    tape() : tp_(nb_tape_new()) {
        if (!tp_) detail::check(NB_ERR_NOMEM);
    }
    ~tape() {
        if (detail::current() == tp_) detail::current() = nullptr;
        nb_tape_free(tp_);
    }
    tape(const tape &) = delete;
    tape &operator=(const tape &) = delete;
    tape(tape &&other) noexcept : tp_(other.tp_) { other.tp_ = nullptr; }
    nb_tape *get() const noexcept { return tp_; }
    void reset() { nb_tape_reset(tp_); }
    nb_status status() const { return nb_tape_status(tp_); }
    const char *error_message() const { return nb_tape_error(tp_); }
    std::size_t size() const { return nb_tape_size(tp_); }
    std::size_t memory() const { return nb_tape_memory(tp_); }

  private:
    nb_tape *tp_;
};

/* Makes a tape the thread's current one for a scope, then puts the previous one back. */
class use_tape {
  public:
    explicit use_tape(const tape &t) : previous_(detail::current()) { detail::current() = t.get(); }
    explicit use_tape(nb_tape *tp) : previous_(detail::current()) { detail::current() = tp; }
    ~use_tape() { detail::current() = previous_; }
    use_tape(const use_tape &) = delete;
    use_tape &operator=(const use_tape &) = delete;

  private:
    nb_tape *previous_;
};

/* A handle on a tensor (see the top of this file). */
class tensor {
  public:
    tensor() noexcept : t_(nullptr), tp_(nullptr) {}
    /* t's tape, or nullptr for a heap tensor; it is not checked: give t's own */
    explicit tensor(nb_tensor *t, nb_tape *tp = nullptr) noexcept : t_(t), tp_(tp) {}
    nb_tensor *get() const noexcept { return t_; }
    nb_tape *tape() const noexcept { return tp_; }
    nb_status status() const { return nb_tensor_status(t_); }
    bool ok() const { return status() == NB_OK; }
    nb_dtype dtype() const { return nb_tensor_dtype(t_); }
    int ndim() const { return nb_tensor_ndim(t_); }
    const std::size_t *shape() const { return nb_tensor_shape(t_); }
    std::size_t size() const { return nb_tensor_size(t_); }
    double item() const { return nb_item(t_); }
    double value(std::size_t i) const { return nb_get(t_, i); }
    double grad(std::size_t i = 0) const { return nb_grad_get(t_, i); }
    bool requires_grad() const { return nb_tensor_requires_grad(t_); }
    void set_name(const char *name) const { nb_tensor_set_name(t_, name); }

  private:
    nb_tensor *t_;
    nb_tape *tp_;
};

namespace detail {
/* The tape an op records on: its operands' (the first that has one), else the current one. */
inline nb_tape *tape_of(const tensor &a) { return a.tape() ? a.tape() : current(); }
inline nb_tape *tape_of(const tensor &a, const tensor &b) {
    return a.tape() ? a.tape() : b.tape() ? b.tape() : current();
}
/* An op's result: thrown (with exceptions) when errored. */
inline tensor result(nb_tensor *t, nb_tape *tp) {
#if NABLA_HPP_EXCEPTIONS
    nb_status st = nb_tensor_status(t);
    if (st != NB_OK) throw error(st, nb_last_error());
#endif
    return tensor(t, tp);
}
} // namespace detail

/* A heap tensor that requires a gradient (by default), freed with the object. */
class parameter {
  public:
    parameter(nb_dtype dt, std::initializer_list<std::size_t> shape, double value = 0, bool requires_grad = true,
              NABLA_HPP_SITE)
        : t_(nb_full_(nullptr, dt, static_cast<int>(shape.size()), shape.begin(), value, file, line)) {
        init(requires_grad);
    }
    parameter(nb_dtype dt, std::initializer_list<std::size_t> shape, const std::vector<double> &values,
              bool requires_grad = true, NABLA_HPP_SITE)
        : t_(nb_from_array_(nullptr, dt, static_cast<int>(shape.size()), shape.begin(), values.data(), file, line)) {
        std::size_t n = 1;
        for (std::size_t s : shape) n *= s;
        if (n != values.size()) { /* (nb_from_array reads n values) */
            nb_tensor_free(t_);
            t_ = nullptr;
            detail::check(NB_ERR_SHAPE);
        }
        init(requires_grad);
    }
    static parameter scalar(double value, nb_dtype dt = NB_F64, bool requires_grad = true) {
        return parameter(dt, {}, value, requires_grad);
    }
    ~parameter() { nb_tensor_free(t_); }
    parameter(const parameter &) = delete;
    parameter &operator=(const parameter &) = delete;
    parameter(parameter &&other) noexcept : t_(other.t_) { other.t_ = nullptr; }
    parameter &operator=(parameter &&other) noexcept {
        if (this != &other) {
            nb_tensor_free(t_);
            t_ = other.t_;
            other.t_ = nullptr;
        }
        return *this;
    }
    operator tensor() const noexcept { return tensor(t_, nullptr); }
    nb_tensor *get() const noexcept { return t_; }
    double item() const { return nb_item(t_); }
    double value(std::size_t i) const { return nb_get(t_, i); }
    void set(std::size_t i, double v) { nb_set(t_, i, v); }
    double grad(std::size_t i = 0) const { return nb_grad_get(t_, i); }
    void zero_grad() { nb_zero_grad(t_); }
    std::size_t size() const { return nb_tensor_size(t_); }

  private:
    void init(bool requires_grad) {
        detail::result(t_, nullptr);
        nb_requires_grad(t_, requires_grad);
    }
    nb_tensor *t_;
};

namespace detail {
/* Constants live on the current tape: without one, a refusal (not a heap tensor nobody frees). */
inline tensor constant(int ndim, const std::size_t *shape, double value, nb_dtype dt, const char *file, int line) {
    nb_tape *tp = current();
    if (!tp)
        return result(nb_op_error(nullptr, NB_ERR_NULL, file, line,
                                  "nb::scalar, nb::full: no current tape (make one current with nb::use_tape)"),
                      nullptr);
    return result(nb_full_(tp, dt, ndim, shape, value, file, line), tp);
}
} // namespace detail

/* A 0-d tensor (or one of a shape, filled) on the current tape: a constant. */
inline tensor scalar(double value, nb_dtype dt = NB_F64, NABLA_HPP_SITE) {
    return detail::constant(0, nullptr, value, dt, file, line);
}
inline tensor full(std::initializer_list<std::size_t> shape, double value, nb_dtype dt = NB_F64, NABLA_HPP_SITE) {
    return detail::constant(static_cast<int>(shape.size()), shape.begin(), value, dt, file, line);
}

/* ---------------------------------------------------------------- operators */

inline tensor operator+(const tensor &a, const tensor &b) {
    nb_tape *tp = detail::tape_of(a, b);
    return detail::result(nb_add_(tp, a.get(), b.get(), nullptr, 0), tp);
}
inline tensor operator-(const tensor &a, const tensor &b) {
    nb_tape *tp = detail::tape_of(a, b);
    return detail::result(nb_sub_(tp, a.get(), b.get(), nullptr, 0), tp);
}
inline tensor operator*(const tensor &a, const tensor &b) {
    nb_tape *tp = detail::tape_of(a, b);
    return detail::result(nb_mul_(tp, a.get(), b.get(), nullptr, 0), tp);
}
inline tensor operator/(const tensor &a, const tensor &b) {
    nb_tape *tp = detail::tape_of(a, b);
    return detail::result(nb_div_(tp, a.get(), b.get(), nullptr, 0), tp);
}
inline tensor operator-(const tensor &a) {
    nb_tape *tp = detail::tape_of(a);
    return detail::result(nb_neg_(tp, a.get(), nullptr, 0), tp);
}
inline tensor operator+(const tensor &a) { return a; }

/* With a double: a + s and s + a are nb_add_scalar, a - s adds -s (exactly a - s), s - a is (-a) + s (exactly
 * s - a), a * s and s * a are nb_scale; divisions divide by (or into) a 0-d tensor of a's dtype, since a * (1/s)
 * is not a / s. */
inline tensor operator+(const tensor &a, double s) {
    nb_tape *tp = detail::tape_of(a);
    return detail::result(nb_add_scalar_(tp, a.get(), s, nullptr, 0), tp);
}
inline tensor operator+(double s, const tensor &a) { return a + s; }
inline tensor operator-(const tensor &a, double s) { return a + -s; }
inline tensor operator-(double s, const tensor &a) { return -a + s; }
inline tensor operator*(const tensor &a, double s) {
    nb_tape *tp = detail::tape_of(a);
    return detail::result(nb_scale_(tp, a.get(), s, nullptr, 0), tp);
}
inline tensor operator*(double s, const tensor &a) { return a * s; }
inline tensor operator/(const tensor &a, double s) {
    nb_tape *tp = detail::tape_of(a);
    nb_tensor *d = tp ? nb_full_(tp, nb_tensor_dtype(a.get()), 0, nullptr, s, nullptr, 0) : nullptr;
    return detail::result(nb_div_(tp, a.get(), d, nullptr, 0), tp);
}
inline tensor operator/(double s, const tensor &a) {
    nb_tape *tp = detail::tape_of(a);
    nb_tensor *n = tp ? nb_full_(tp, nb_tensor_dtype(a.get()), 0, nullptr, s, nullptr, 0) : nullptr;
    return detail::result(nb_div_(tp, n, a.get(), nullptr, 0), tp);
}

/* Rebind the left side to the new result. */
inline tensor &operator+=(tensor &a, const tensor &b) { return a = a + b; }
inline tensor &operator-=(tensor &a, const tensor &b) { return a = a - b; }
inline tensor &operator*=(tensor &a, const tensor &b) { return a = a * b; }
inline tensor &operator/=(tensor &a, const tensor &b) { return a = a / b; }
inline tensor &operator+=(tensor &a, double s) { return a = a + s; }
inline tensor &operator-=(tensor &a, double s) { return a = a - s; }
inline tensor &operator*=(tensor &a, double s) { return a = a * s; }
inline tensor &operator/=(tensor &a, double s) { return a = a / s; }

/* Deleted: see the top of this file (compare .item()s, or use where/maximum/minimum/clamp). */
bool operator<(const tensor &, const tensor &) = delete;
bool operator<=(const tensor &, const tensor &) = delete;
bool operator>(const tensor &, const tensor &) = delete;
bool operator>=(const tensor &, const tensor &) = delete;
bool operator==(const tensor &, const tensor &) = delete;
bool operator!=(const tensor &, const tensor &) = delete;
bool operator<(const tensor &, double) = delete;
bool operator<=(const tensor &, double) = delete;
bool operator>(const tensor &, double) = delete;
bool operator>=(const tensor &, double) = delete;
bool operator==(const tensor &, double) = delete;
bool operator!=(const tensor &, double) = delete;
bool operator<(double, const tensor &) = delete;
bool operator<=(double, const tensor &) = delete;
bool operator>(double, const tensor &) = delete;
bool operator>=(double, const tensor &) = delete;
bool operator==(double, const tensor &) = delete;
bool operator!=(double, const tensor &) = delete;

/* ---------------------------------------------------------------- functions */

#define NABLA_HPP_UNARY(name)                                                        \
    inline tensor name(const tensor &a, NABLA_HPP_SITE) {                            \
        nb_tape *tp = detail::tape_of(a);                                            \
        return detail::result(nb_##name##_(tp, a.get(), file, line), tp);            \
    }
NABLA_HPP_UNARY(exp)
NABLA_HPP_UNARY(log)
NABLA_HPP_UNARY(sin)
NABLA_HPP_UNARY(cos)
NABLA_HPP_UNARY(tanh)
NABLA_HPP_UNARY(sqrt)
NABLA_HPP_UNARY(abs)
NABLA_HPP_UNARY(square)
NABLA_HPP_UNARY(sigmoid)
NABLA_HPP_UNARY(relu)
NABLA_HPP_UNARY(erf)
NABLA_HPP_UNARY(log1p)
NABLA_HPP_UNARY(expm1)
NABLA_HPP_UNARY(softplus)
NABLA_HPP_UNARY(gelu)
NABLA_HPP_UNARY(detach)
#undef NABLA_HPP_UNARY

#define NABLA_HPP_BINARY(name)                                                       \
    inline tensor name(const tensor &a, const tensor &b, NABLA_HPP_SITE) {           \
        nb_tape *tp = detail::tape_of(a, b);                                         \
        return detail::result(nb_##name##_(tp, a.get(), b.get(), file, line), tp);  \
    }
NABLA_HPP_BINARY(maximum)
NABLA_HPP_BINARY(minimum)
#undef NABLA_HPP_BINARY

inline tensor pow(const tensor &a, double p, NABLA_HPP_SITE) {
    nb_tape *tp = detail::tape_of(a);
    return detail::result(nb_pow_(tp, a.get(), p, file, line), tp);
}
inline tensor clamp(const tensor &a, double lo, double hi, NABLA_HPP_SITE) {
    nb_tape *tp = detail::tape_of(a);
    return detail::result(nb_clamp_(tp, a.get(), lo, hi, file, line), tp);
}
inline tensor leaky_relu(const tensor &a, double slope, NABLA_HPP_SITE) {
    nb_tape *tp = detail::tape_of(a);
    return detail::result(nb_leaky_relu_(tp, a.get(), slope, file, line), tp);
}
inline tensor sum(const tensor &a, NABLA_HPP_SITE) {
    nb_tape *tp = detail::tape_of(a);
    return detail::result(nb_sum_all_(tp, a.get(), false, file, line), tp);
}
inline tensor mean(const tensor &a, NABLA_HPP_SITE) {
    nb_tape *tp = detail::tape_of(a);
    return detail::result(nb_sum_all_(tp, a.get(), true, file, line), tp);
}
inline tensor matmul(const tensor &a, const tensor &b, NABLA_HPP_SITE) {
    nb_tape *tp = detail::tape_of(a, b);
    return detail::result(nb_matmul_(tp, a.get(), b.get(), false, false, file, line), tp);
}
/* x W + bias (nb_linear: W of shape (in, out)). */
inline tensor linear(const tensor &x, const tensor &W, const tensor &bias, NABLA_HPP_SITE) {
    nb_tape *tp = detail::tape_of(x, W);
    if (!tp) tp = detail::tape_of(bias); /* the bias may be the one operand on a tape */
    return detail::result(nb_linear_(tp, x.get(), W.get(), bias.get(), false, false, file, line), tp);
}
/* cond ? a : b, element-wise (cond true where nonzero); no gradient to cond. */
inline tensor where(const tensor &cond, const tensor &a, const tensor &b, NABLA_HPP_SITE) {
    nb_tape *tp = detail::tape_of(cond, a);
    if (!tp) tp = detail::tape_of(b);
    return detail::result(nb_where_(tp, cond.get(), a.get(), b.get(), file, line), tp);
}

/* ---------------------------------------------------------------- gradients */

/* nb_backward: throws on failure (with exceptions), else returns the status. */
inline nb_status backward(const tensor &loss, NABLA_HPP_SITE) {
    return detail::check(nb_backward_(loss.get(), nullptr, file, line));
}
/* nb_grad: d out/d wrt[i] as tensors on out's tape (with create_graph, differentiable again). */
inline std::vector<tensor> grad(const tensor &out, std::initializer_list<tensor> wrt, bool create_graph = false,
                                NABLA_HPP_SITE) {
    std::vector<nb_tensor *> in, g(wrt.size());
    for (const tensor &w : wrt) in.push_back(w.get());
    nb_status st = nb_grad_(out.get(), nullptr, in.data(), static_cast<int>(in.size()), g.data(), create_graph, file,
                            line);
    detail::check(st);
    std::vector<tensor> result;
    for (nb_tensor *t : g) result.push_back(tensor(t, out.tape()));
    return result;
}

/* ---------------------------------------------------------------- callbacks */

/* nb::no_throw<fn>: fn for nb_recompute, with its exceptions turned into
 * the status it returns (nb::error's own; NB_ERR_STATE for any other), so
 * that none unwinds through nabla's C frames, which would skip their
 * cleanup (the tape would stay inside the function):
 *     nb_recompute(tp.get(), nb::no_throw<block>, ctx, in, n, out, m, nullptr);
 * An nb:: op that threw has already put its message on the tape. */
template <nb_recompute_fn fn>
nb_status no_throw(nb_tape *tp, nb_tensor *const *inputs, nb_tensor **outputs, void *ctx) noexcept {
#if NABLA_HPP_EXCEPTIONS
    try {
        return fn(tp, inputs, outputs, ctx);
    } catch (const error &e) {
        return e.status();
    } catch (...) {
        return NB_ERR_STATE;
    }
#else
    return fn(tp, inputs, outputs, ctx);
#endif
}

} // namespace nb

#endif /* NABLA_HPP */
