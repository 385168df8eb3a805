/*
 * Replaying scalar code (issue 23): a graph whose every op is a built-in
 * element-wise op on one float64 element, as a physics loop written with
 * 0-d tensors, replays as a compact program over dense arrays rather than
 * through the tape's entries and headers.  The entries are 96 bytes and
 * each result's header another 100 or so, in memory that the loop sweeps
 * twice per replay; here an instruction is 24 bytes, the values and
 * gradients 8 each, in arrays that stay in cache (ADOL-C's tape is laid
 * out the same way).
 *
 * The results' tensors keep their values in the program's value array
 * (their data pointer moved there at capture, in tape memory), so they hold
 * the replayed values as with any replay.  The arithmetic is the ops' own
 * scalar code, expression for expression (src/ops/unary.c, binary.c), and
 * the order of gradient contributions is backward's: each input's first
 * contribution sets, the next ones add, in reverse recording order (worked
 * out at capture for each output, since the graph does not change), so
 * results are bitwise those of eager mode; tests/test_replay.c checks it.
 * The op results' gradients stay in the program: nb_grad_get of an
 * intermediate after a scalar replay gives no gradient; leaves get theirs.
 */
#include "replay.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { ADD = 1, SUB, MUL, DIV, NEG, SCALE, ADD_SCALAR, SQUARE, SQRT, SIN, COS, EXP, LOG, TANH, SIGMOID };
static const char *const op_names[] = {NULL,     "add", "sub",  "mul", "div", "neg", "scale",  "add_scalar",
                                       "square", "sqrt", "sin", "cos", "exp", "log", "tanh", "sigmoid"};
#define N_OPS (int)(sizeof op_names / sizeof *op_names)

/* Edge flags of an instruction for one output: run its backward; input a
 * (b) takes a gradient; its first contribution (set: an op result; set or
 * add as the leaf's gradient state says: a leaf); else add. */
enum { RUN = 1, A_NEED = 2, A_FIRST = 4, A_LEAF = 8, B_NEED = 16, B_FIRST = 32, B_LEAF = 64 };

typedef struct {
    uint8_t op;
    uint32_t y, a, b; /* slots; b unused by unary ops */
    double s;         /* the op's scalar (scale, add_scalar) */
} instr;

struct nb_scalar_program {
    nb_tape *tp;
    instr *code;
    size_t n_code;
    double *v, *g;         /* values and gradients by slot (tape memory) */
    nb_tensor **leaves;    /* slots [0, n_leaves) */
    size_t n_leaves, n_slots;
    uint8_t *flags;        /* n_outputs x n_code */
    uint32_t *out_slot;    /* each output's slot */
    uint32_t *reached;     /* per output: the leaves that get a gradient, as n then slots */
    size_t *reached_at;    /* where each output's list starts in reached */
    bool *leaf_acc;        /* per replay: the leaf's gradient adds up (set at the start of a backward) */
    void **leaf_grad;
    int n_outputs;
};

static int op_code(const nb_entry *e) {
    if (e->user || e->n_in < 1 || e->n_in > 2) return 0;
    for (int k = 1; k < N_OPS; k++)
        if (!strcmp(e->op->name, op_names[k])) return (k <= DIV) == (e->n_in == 2) ? k : 0;
    return 0;
}

static bool scalar_f64(const nb_tensor *t) { return t->size == 1 && t->dtype == NB_F64; }

static int compare_pointers(const void *a, const void *b) {
    uintptr_t x = (uintptr_t) * (nb_tensor *const *)a, y = (uintptr_t) * (nb_tensor *const *)b;
    return x < y ? -1 : x > y;
}

void nb_scalar_free(nb_scalar_program *p) {
    if (!p) return;
    nb_free(p->code);
    nb_free(p->leaves);
    nb_free(p->flags);
    nb_free(p->out_slot);
    nb_free(p->reached);
    nb_free(p->reached_at);
    nb_free(p->leaf_acc);
    nb_free(p->leaf_grad);
    nb_free(p);
}

/* The slot of tensor x read by entry `before`: a result's by its entry, a
 * leaf's by its place among the sorted leaves. */
static uint32_t slot_of(const nb_scalar_program *p, const uint32_t *slot_of_entry, const nb_tensor *x) {
    if (!x->is_leaf) return slot_of_entry[x->entry - 1];
    nb_tensor *const *found = bsearch(&x, p->leaves, p->n_leaves, sizeof *p->leaves, compare_pointers);
    return (uint32_t)(found - p->leaves);
}

/* Every edge's flags for a backward from output k. */
static void plan_backward(nb_scalar_program *p, int k, bool *has, uint32_t *reached) {
    memset(has, 0, p->n_slots);
    has[p->out_slot[k]] = true;
    uint8_t *flags = p->flags + (size_t)k * p->n_code;
    for (size_t i = p->n_code; i-- > 0;) {
        const instr *c = &p->code[i];
        flags[i] = 0;
        if (!has[c->y]) continue;
        flags[i] = RUN;
        for (int side = 0; side < (c->op <= DIV ? 2 : 1); side++) {
            uint32_t x = side ? c->b : c->a;
            /* needs a gradient: marked in `has` below when the slot's tensor requires one */
            if (!p->leaf_acc[x]) continue; /* (leaf_acc doubles as "requires grad" while planning) */
            bool leaf = x < p->n_leaves;
            flags[i] |= (uint8_t)((side ? B_NEED : A_NEED) |
                                  (!has[x] ? (leaf ? (side ? B_LEAF : A_LEAF) : (side ? B_FIRST : A_FIRST)) : 0));
            has[x] = true;
        }
    }
    size_t n = 0;
    for (uint32_t l = 0; l < p->n_leaves; l++)
        if (has[l]) reached[++n] = l;
    reached[0] = (uint32_t)n;
}

nb_scalar_program *nb_scalar_compile(nb_tape *tp, const uint32_t *fwd, size_t n, nb_tensor *const *outputs,
                                     int n_outputs, bool *nomem) {
    *nomem = false;
    if (n == 0 || n > UINT32_MAX / 2) return NULL;
    /* Only graphs of the ops above on single float64 elements, whose results
     * keep their values after their headers (not moved by another graph). */
    size_t n_read = 0;
    for (size_t k = 0; k < n; k++) {
        const nb_entry *e = &tp->entries[fwd[k]];
        const nb_tensor *y = e->out;
        if (!op_code(e) || !scalar_f64(y) || y->data != (const char *)y + nb_header_bytes(y->ndim)) return NULL;
        for (int i = 0; i < e->n_in; i++) {
            if (!scalar_f64(e->in[i])) return NULL;
            n_read += e->in[i]->is_leaf;
        }
    }
    nb_scalar_program *p = nb_malloc(sizeof *p);
    uint32_t *slot_of_entry = NULL;
    bool *has = NULL;
    if (!p) goto nomem;
    *p = (nb_scalar_program){.tp = tp, .n_code = n, .n_outputs = n_outputs};
    uint32_t last = fwd[n - 1] + 1;
    p->code = nb_malloc(n * sizeof *p->code);
    p->leaves = nb_malloc((n_read ? n_read : 1) * sizeof *p->leaves);
    slot_of_entry = nb_malloc(last * sizeof *slot_of_entry);
    if (!p->code || !p->leaves || !slot_of_entry) goto nomem;
    for (size_t k = 0; k < n; k++) {
        const nb_entry *e = &tp->entries[fwd[k]];
        for (int i = 0; i < e->n_in; i++)
            if (e->in[i]->is_leaf) p->leaves[p->n_leaves++] = e->in[i];
    }
    qsort(p->leaves, p->n_leaves, sizeof *p->leaves, compare_pointers);
    size_t unique = 0;
    for (size_t i = 0; i < p->n_leaves; i++)
        if (i == 0 || p->leaves[i] != p->leaves[i - 1]) p->leaves[unique++] = p->leaves[i];
    p->n_leaves = unique;
    p->n_slots = unique + n;
    for (size_t k = 0; k < n; k++) slot_of_entry[fwd[k]] = (uint32_t)(unique + k);
    p->v = nb_tape_alloc(tp, p->n_slots * sizeof(double));
    p->g = nb_tape_alloc(tp, p->n_slots * sizeof(double));
    p->flags = nb_malloc((size_t)n_outputs * n);
    p->out_slot = nb_malloc((size_t)n_outputs * sizeof *p->out_slot);
    p->reached = nb_malloc((size_t)n_outputs * (unique + 1) * sizeof *p->reached);
    p->reached_at = nb_malloc((size_t)n_outputs * sizeof *p->reached_at);
    p->leaf_acc = nb_malloc(p->n_slots);
    p->leaf_grad = nb_malloc((unique ? unique : 1) * sizeof *p->leaf_grad);
    has = nb_malloc(p->n_slots);
    if (!p->v || !p->g || !p->flags || !p->out_slot || !p->reached || !p->reached_at || !p->leaf_acc ||
        !p->leaf_grad || !has)
        goto nomem;
    for (size_t k = 0; k < n; k++) {
        const nb_entry *e = &tp->entries[fwd[k]];
        instr *c = &p->code[k];
        c->op = (uint8_t)op_code(e);
        c->y = (uint32_t)(unique + k);
        c->a = slot_of(p, slot_of_entry, e->in[0]);
        c->b = e->n_in == 2 ? slot_of(p, slot_of_entry, e->in[1]) : 0;
        c->s = e->scalar;
        p->leaf_acc[c->y] = e->out->requires_grad;
    }
    for (size_t l = 0; l < unique; l++) p->leaf_acc[l] = p->leaves[l]->requires_grad;
    for (int k = 0; k < n_outputs; k++) {
        p->out_slot[k] = slot_of_entry[outputs[k]->entry - 1];
        p->reached_at[k] = (size_t)k * (unique + 1);
        plan_backward(p, k, has, p->reached + p->reached_at[k]);
    }
    memset(p->leaf_acc, 0, p->n_slots);
    /* The results' values move to the program's array. */
    for (size_t k = 0; k < n; k++) {
        nb_tensor *y = tp->entries[fwd[k]].out;
        p->v[unique + k] = *(const double *)y->data;
        y->data = &p->v[unique + k];
    }
    nb_free(slot_of_entry);
    nb_free(has);
    return p;
nomem:
    *nomem = true;
    nb_free(slot_of_entry);
    nb_free(has);
    nb_scalar_free(p);
    return NULL;
}

/* The ops' scalar code (src/ops/binary.c, unary.c), in double. */
void nb_scalar_forward(nb_scalar_program *p) {
    double *restrict v = p->v;
    for (size_t l = 0; l < p->n_leaves; l++) v[l] = *(const double *)p->leaves[l]->data;
    const instr *code = p->code;
    for (size_t i = 0, n = p->n_code; i < n; i++) {
        const instr *c = &code[i];
        const double x = v[c->a], s = c->s;
        double y;
        switch (c->op) {
        case ADD: y = x + v[c->b]; break;
        case SUB: y = x - v[c->b]; break;
        case MUL: y = x * v[c->b]; break;
        case DIV: y = x / v[c->b]; break;
        case NEG: y = -x; break;
        case SCALE: y = x * s; break;
        case ADD_SCALAR: y = x + s; break;
        case SQUARE: y = x * x; break;
        case SQRT: y = sqrt(x); break;
        case SIN: y = sin(x); break;
        case COS: y = cos(x); break;
        case EXP: y = exp(x); break;
        case LOG: y = log(x); break;
        case TANH: y = tanh(x); break;
        default: y = 1 / (1 + exp(-x)); break; /* SIGMOID */
        }
        v[c->y] = y;
    }
}

/* gx for one edge: first contribution sets (a result's, or a leaf's whose
 * gradient does not add up), the others add. */
static inline void put(double *restrict g, const bool *leaf_acc, uint32_t x, double d, uint8_t f, uint8_t first,
                       uint8_t leaf) {
    if (f & first)
        g[x] = d;
    else if (f & leaf)
        g[x] = leaf_acc[x] ? g[x] + d : d;
    else
        g[x] = g[x] + d;
}

nb_status nb_scalar_backward(nb_scalar_program *p, int k) {
    nb_tape *tp = p->tp;
    const uint32_t *reached = p->reached + p->reached_at[k];
    double *restrict g = p->g;
    const double *restrict v = p->v;
    /* the leaves' gradient buffers, and whether they add up (as backward's nb_grad_target says) */
    for (uint32_t r = 1; r <= reached[0]; r++) {
        uint32_t l = reached[r];
        bool acc;
        if (!(p->leaf_grad[l] = nb_grad_target(tp, p->leaves[l], &acc))) return tp->status;
        p->leaf_acc[l] = acc;
        if (acc) g[l] = *(const double *)p->leaf_grad[l];
    }
    g[p->out_slot[k]] = 1.0;
    const uint8_t *flags = p->flags + (size_t)k * p->n_code;
    const bool *leaf_acc = p->leaf_acc;
    const instr *code = p->code;
    for (size_t i = p->n_code; i-- > 0;) {
        uint8_t f = flags[i];
        if (!(f & RUN)) continue;
        const instr *c = &code[i];
        const double gy = g[c->y], x = v[c->a], y = v[c->y], s = c->s;
        double da;
        switch (c->op) {
        case ADD:
        case SUB:
        case DIV: {
            const double b = v[c->b];
            if (f & A_NEED) put(g, leaf_acc, c->a, gy * (c->op == DIV ? 1 / b : 1), f, A_FIRST, A_LEAF);
            if (f & B_NEED)
                put(g, leaf_acc, c->b, gy * (c->op == ADD ? 1 : c->op == SUB ? -1 : -y / b), f, B_FIRST, B_LEAF);
            continue;
        }
        case MUL: {
            /* read both values first: x * x writes a's gradient before b's is read */
            const double b = v[c->b];
            if (f & A_NEED) put(g, leaf_acc, c->a, gy * b, f, A_FIRST, A_LEAF);
            if (f & B_NEED) put(g, leaf_acc, c->b, gy * x, f, B_FIRST, B_LEAF);
            continue;
        }
        case NEG: da = -1; break;
        case SCALE: da = s; break;
        case ADD_SCALAR: da = 1; break;
        case SQUARE: da = 2 * x; break;
        case SQRT: da = 0.5 / y; break;
        case SIN: da = cos(x); break;
        case COS: da = -sin(x); break;
        case EXP: da = y; break;
        case LOG: da = 1 / x; break;
        case TANH: da = 1 - y * y; break;
        default: da = y * (1 - y); break; /* SIGMOID */
        }
        put(g, leaf_acc, c->a, gy * da, f, A_FIRST, A_LEAF);
    }
    for (uint32_t r = 1; r <= reached[0]; r++) *(double *)p->leaf_grad[reached[r]] = g[reached[r]];
    return NB_OK;
}

/* Do the results still keep their values in the program (no other graph
 * moved them)?  Checked on the outputs, which a replay must refresh. */
bool nb_scalar_intact(const nb_scalar_program *p, nb_tensor *const *outputs) {
    for (int k = 0; k < p->n_outputs; k++)
        if (outputs[k]->data != &p->v[p->out_slot[k]]) return false;
    return true;
}
