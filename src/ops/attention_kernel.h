/*
 * The blocks of the fused attention (src/ops/attention.c), written once for
 * both dtypes: attention.c includes this file with T = float, SFX = _f, then
 * with T = double, SFX = _d.
 *
 * One head is Q (L, E), K (S, E), V (S, Ev), all row-major.  Queries go in
 * blocks of BR rows, keys in blocks of BC; a block of scores is
 *     Sb = scale · Q_blk K_blkᵀ, then masked (−inf where a key is hidden)
 * Forward keeps, for each query row, the largest score m seen so far, the
 * sum l of e^(s − m) so far, and the output row O = Σ e^(s − m) v so far;
 * a block with a larger maximum m' rescales both by e^(m − m') (the online
 * softmax).  At the end O /= l, and lse = m + log l is kept for backward.
 *
 * Backward recomputes each block's weights P = e^(Sb − lse) and, with
 * G = dL/dO, D = dL/dO·O per row (Σ_j dP_ij P_ij, as O = (P ⊙ M) V; NaN
 * where G's row is not finite, as that sum is then):
 *     dV += (P ⊙ M)ᵀ G          dP = (G Vᵀ) ⊙ M
 *     dS = P ⊙ (dP − D)         dQ += scale dS K        dK += scale dSᵀ Q
 * where M is the dropout mask (0 or 1/(1 − p); 1 without dropout) and dS
 * is also d loss/d mask for an additive mask.
 */
#define FN_(name, sfx) name##sfx
#define FN2(name, sfx) FN_(name, sfx)
#define FN(name) FN2(name, SFX)

/* The largest of s[0..n), or −inf (NaN is passed over here; it reaches the
 * result through e^(NaN − m)). */
NB_VECTOR_CLONES static T FN(row_max)(const T *restrict s, size_t n) {
    T lane[LANES], m = -(T)INFINITY;
    size_t c = 0;
    for (int k = 0; k < LANES; k++) lane[k] = -(T)INFINITY;
    for (; c + LANES <= n; c += LANES)
        for (int k = 0; k < LANES; k++) lane[k] = s[c + k] > lane[k] ? s[c + k] : lane[k];
    for (; c < n; c++) m = s[c] > m ? s[c] : m;
    for (int k = 0; k < LANES; k++) m = lane[k] > m ? lane[k] : m;
    return m;
}

/* s := e^(s − ref), returning Σ s, one exp per element.  The sum runs in
 * LANES partial sums (element c into lane c mod LANES), added up at the
 * end: an order fixed by the code, so every clone and thread gives the
 * same bits, and the adds do not wait for each other (a single running
 * sum made this loop a chain of dependent adds). */
NB_VECTOR_CLONES static T FN(exp_row)(T *restrict s, size_t n, T ref) {
    for (size_t c = 0; c < n; c++) s[c] = NB_EXP(s[c] - ref);
    T lane[LANES] = {0}, sum = 0;
    size_t c = 0;
    for (; c + LANES <= n; c += LANES)
        for (int k = 0; k < LANES; k++) lane[k] += s[c + k];
    for (int k = 0; k < LANES; k++) sum += lane[k];
    for (; c < n; c++) sum += s[c];
    return sum;
}

/* p := p · M, M = keep where the element is kept and 0 where dropped (a
 * product, so that NaN stays NaN as in the composed p ⊙ M); element c of
 * the row is number first + c of the head's L·S weights. */
NB_VECTOR_CLONES static void FN(drop_row)(T *restrict p, size_t n, uint64_t seed, uint64_t first, uint64_t limit,
                                          T keep) {
    for (size_t c = 0; c < n; c++) p[c] *= attention_dropped(seed, first + c, limit) ? 0 : keep;
}

NB_VECTOR_CLONES static void FN(scale_row)(T *restrict o, size_t n, T f) {
    for (size_t c = 0; c < n; c++) o[c] *= f;
}

NB_VECTOR_CLONES static void FN(divide_row)(T *restrict o, size_t n, T d) {
    for (size_t c = 0; c < n; c++) o[c] /= d;
}

/* ds := p ⊙ (ds − d), the softmax's backward for one row. */
NB_VECTOR_CLONES static void FN(softmax_grad_row)(T *restrict ds, const T *restrict p, size_t n, T d) {
    for (size_t c = 0; c < n; c++) ds[c] = p[c] * (ds[c] - d);
}

NB_VECTOR_CLONES static T FN(dot)(const T *restrict a, const T *restrict b, size_t n) {
    T s = 0;
    for (size_t c = 0; c < n; c++) s += a[c] * b[c];
    return s;
}

/* Masks a block of scores (rows i0.., columns j0..) of head h: the user's
 * mask (boolean: −inf where it is 0; additive: added), then causality
 * (−inf where j > i). */
static void FN(mask_block)(const attention_plan *p, const T *mask, size_t h, size_t i0, size_t br, size_t j0,
                           size_t bc, T *s) {
    const T hidden = -(T)INFINITY;
    for (size_t r = 0; r < br; r++) {
        T *row = s + r * bc;
        size_t i = i0 + r;
        if (mask) {
            const T *m = mask + mask_offset(p, h, i, j0);
            size_t step = p->mask_step[p->nd + 1];
            if (p->mask_is_bool)
                for (size_t c = 0; c < bc; c++) row[c] = m[c * step] != 0 ? row[c] : hidden;
            else
                for (size_t c = 0; c < bc; c++) row[c] += m[c * step];
        }
        if (p->causal)
            for (size_t c = i + 1 > j0 ? i + 1 - j0 : 0; c < bc; c++) row[c] = hidden;
    }
}

/* A row of dS where the weights are NaN (no key seen) or the upstream
 * gradient is not finite: 0 where the key is hidden by a boolean mask or by
 * causality, as the composed where() passes no gradient there. */
static void FN(hide_row)(const attention_plan *p, const T *mask, size_t h, size_t i, size_t j0, size_t bc, T *ds) {
    if (mask && p->mask_is_bool) {
        const T *m = mask + mask_offset(p, h, i, j0);
        size_t step = p->mask_step[p->nd + 1];
        for (size_t c = 0; c < bc; c++) ds[c] = m[c * step] != 0 ? ds[c] : 0;
    }
    if (p->causal)
        for (size_t c = i + 1 > j0 ? i + 1 - j0 : 0; c < bc; c++) ds[c] = 0;
}

/* Whether x[0..n) are all finite: Σ x · 0 is 0 for finite values and NaN
 * once one is inf or NaN, summed in LANES partial sums (so it vectorises). */
NB_VECTOR_CLONES static bool FN(all_finite)(const T *restrict x, size_t n) {
    T lane[LANES] = {0}, z = 0;
    size_t c = 0;
    for (; c + LANES <= n; c += LANES)
        for (int k = 0; k < LANES; k++) lane[k] += x[c + k] * 0;
    for (int k = 0; k < LANES; k++) z += lane[k];
    for (; c < n; c++) z += x[c] * 0;
    return z == 0;
}

/* The keys a causal pass must visit even where every query is past them:
 * 1 + the last key whose row of K or V holds an inf or NaN (0 if none).
 * A hidden key's weight is 0, and the composed ops still multiply it into
 * 0 · inf = NaN (P V, dS K, G Vᵀ), so only finite keys may be skipped. */
static size_t FN(keys_to_visit)(const T *K, const T *V, size_t S, size_t E, size_t Ev) {
    if (FN(all_finite)(K, S * E) && FN(all_finite)(V, S * Ev)) return 0;
    size_t j = S;
    while (j > 0 && FN(all_finite)(K + (j - 1) * E, E) && FN(all_finite)(V + (j - 1) * Ev, Ev)) j--;
    return j;
}

/* Query block qb of head h: its output rows and their log-sum-exps.
 * work holds BR·BC + 2·BR values. */
static void FN(forward_block)(const attention_job *j, size_t h, size_t qb, size_t visit, T *work) {
    const attention_plan *p = j->plan;
    size_t L = p->L, S = p->S, E = p->E, Ev = p->Ev;
    size_t i0 = qb * BR, br = L - i0 < BR ? L - i0 : BR;
    const T *Q = (const T *)j->q + (h * L + i0) * E, *K = (const T *)j->k + h * S * E;
    const T *V = (const T *)j->v + h * S * Ev;
    T *O = (T *)j->out + (h * L + i0) * Ev, *lse = (T *)p->lse + h * L + i0;
    T *sb = work, *m = work + BR * BC, *l = m + BR;
    T keep = p->dropout_p < 1 ? (T)(1 / (1 - p->dropout_p)) : 0;
    for (size_t r = 0; r < br; r++) m[r] = -(T)INFINITY, l[r] = 0;
    memset(O, 0, br * Ev * sizeof(T));
    /* later keys are hidden from every row: skipped if finite (visit) */
    size_t end = p->causal && i0 + br < S ? i0 + br : S;
    if (end < visit) end = visit;
    for (size_t j0 = 0; j0 < end; j0 += BC) {
        size_t bc = end - j0 < BC ? end - j0 : BC;
        block_product(DT, false, true, br, bc, E, p->scale, Q, E, K + j0 * E, E, 0, sb);
        FN(mask_block)(p, j->mask, h, i0, br, j0, bc, sb);
        for (size_t r = 0; r < br; r++) {
            T *row = sb + r * bc, mx = FN(row_max)(row, bc), m_new = mx > m[r] ? mx : m[r];
            T ref = m_new == -(T)INFINITY ? 0 : m_new; /* nothing seen yet: every e^(−inf) is 0 */
            T sum = FN(exp_row)(row, bc, ref), rescale = NB_EXP(m[r] - ref);
            if (rescale != 1) FN(scale_row)(O + r * Ev, Ev, rescale);
            l[r] = l[r] * rescale + sum;
            m[r] = m_new;
            if (p->dropout) FN(drop_row)(row, bc, p->seed, ((uint64_t)h * L + i0 + r) * S + j0, p->drop_limit, keep);
        }
        block_product(DT, false, false, br, Ev, bc, 1, sb, bc, V + j0 * Ev, Ev, 1, O);
    }
    for (size_t r = 0; r < br; r++) {
        FN(divide_row)(O + r * Ev, Ev, l[r]); /* l = 0 (no key seen): NaN, as softmax of nothing */
        lse[r] = m[r] + log(l[r]);
    }
}

/* The gradients of head h, into work: dQ (L, E), dK (S, E), dV (S, Ev)
 * after 2·BR·BC + L values of blocks and row sums; an additive mask's gradient is added
 * into j->grad_mask (broadcast: the caller runs the heads in order). */
static void FN(backward_head)(const attention_job *j, size_t h, T *work) {
    const attention_plan *p = j->plan;
    size_t L = p->L, S = p->S, E = p->E, Ev = p->Ev;
    const T *Q = (const T *)j->q + h * L * E, *K = (const T *)j->k + h * S * E, *V = (const T *)j->v + h * S * Ev;
    const T *O = (const T *)j->out + h * L * Ev, *G = (const T *)j->grad_out + h * L * Ev;
    const T *lse = (const T *)p->lse + h * L;
    T *sb = work, *ds = sb + BR * BC, *d = ds + BR * BC;
    T *dQ = d + L, *dK = dQ + L * E, *dV = dK + S * E;
    T keep = p->dropout_p < 1 ? (T)(1 / (1 - p->dropout_p)) : 0;
    memset(dQ, 0, (L * E + S * E + S * Ev) * sizeof(T));
    /* D = G·O = Σ_j dP_ij P_ij; where G's row is not finite every dP_ij is
     * ±inf or NaN, and the composed Σ_j is NaN or gives inf − inf: dS is
     * NaN at every key, as D = NaN makes it (G·O could be ±inf instead). */
    for (size_t i = 0; i < L; i++)
        d[i] = FN(all_finite)(G + i * Ev, Ev) ? FN(dot)(G + i * Ev, O + i * Ev, Ev) : (T)NAN;
    size_t visit = p->causal ? FN(keys_to_visit)(K, V, S, E, Ev) : S;
    for (size_t i0 = 0; i0 < L; i0 += BR) {
        size_t br = L - i0 < BR ? L - i0 : BR;
        /* The keys causality hides from the whole block are skipped only if
         * the composed ops give them nothing either: a row that saw no key
         * has NaN weights, which (P ⊙ M)ᵀ G spreads to every key's dV, and a
         * hidden weight's 0 times an inf or NaN in this block's G (dV) or Q
         * (dK), or in a later key's K (dQ) or V (dP), is NaN. */
        bool finite = FN(all_finite)(lse + i0, br) && FN(all_finite)(G + i0 * Ev, br * Ev) &&
                      FN(all_finite)(Q + i0 * E, br * E);
        size_t end = p->causal && i0 + br < S && finite ? i0 + br : S;
        if (end < visit) end = visit;
        for (size_t j0 = 0; j0 < end; j0 += BC) {
            size_t bc = end - j0 < BC ? end - j0 : BC;
            block_product(DT, false, true, br, bc, E, p->scale, Q + i0 * E, E, K + j0 * E, E, 0, sb);
            FN(mask_block)(p, j->mask, h, i0, br, j0, bc, sb);
            block_product(DT, false, true, br, bc, Ev, 1, G + i0 * Ev, Ev, V + j0 * Ev, Ev, 0, ds);
            for (size_t r = 0; r < br; r++) {
                T *prow = sb + r * bc, *drow = ds + r * bc;
                FN(exp_row)(prow, bc, lse[i0 + r]); /* P, the weights before dropout */
                uint64_t first = ((uint64_t)h * L + i0 + r) * S + j0;
                if (p->dropout) FN(drop_row)(drow, bc, p->seed, first, p->drop_limit, keep); /* dP */
                FN(softmax_grad_row)(drow, prow, bc, d[i0 + r]);                           /* dS */
                if (!isfinite(lse[i0 + r]) || !isfinite(d[i0 + r])) FN(hide_row)(p, j->mask, h, i0 + r, j0, bc, drow);
                if (p->dropout) FN(drop_row)(prow, bc, p->seed, first, p->drop_limit, keep); /* P ⊙ M */
            }
            block_product(DT, true, false, bc, Ev, br, 1, sb, bc, G + i0 * Ev, Ev, 1, dV + j0 * Ev);
            block_product(DT, false, false, br, E, bc, p->scale, ds, bc, K + j0 * E, E, 1, dQ + i0 * E);
            block_product(DT, true, false, bc, E, br, p->scale, ds, bc, Q + i0 * E, E, 1, dK + j0 * E);
            if (j->grad_mask)
                for (size_t r = 0; r < br; r++) {
                    T *gm = (T *)j->grad_mask + mask_offset(p, h, i0 + r, j0);
                    size_t step = p->mask_step[p->nd + 1];
                    for (size_t c = 0; c < bc; c++) gm[c * step] += ds[r * bc + c];
                }
        }
    }
}

#undef FN
#undef FN2
#undef FN_
