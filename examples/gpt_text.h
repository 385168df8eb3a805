/*
 * The text of examples/gpt.c: fortune files read as Unicode code points,
 * a vocabulary of the characters they use, a seeded split into training
 * and held-out fortunes, and the bigram model to beat.
 *
 * A fortune file holds entries separated by lines of a single "%"; Debian's
 * fortunes-zh colours its titles and authors with terminal escapes
 * (ESC [ 32 m ... ESC [ m), which are dropped.  Each entry keeps its
 * closing "%\n", so the model learns where a fortune ends and a sample can
 * start from one.  Text is UTF-8: a character is a code point (a Chinese
 * character is one token, not three bytes), and a byte that is not valid
 * UTF-8 reads as U+FFFD.
 */
#ifndef NABLA_EXAMPLES_GPT_TEXT_H
#define NABLA_EXAMPLES_GPT_TEXT_H

#include "nabla.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint32_t *cp;         /* every entry's code points, one after another */
    size_t n, cap;
    size_t *start;        /* entry i is cp[start[i] .. start[i + 1]) */
    size_t entries, entries_cap;
    double min_chinese;   /* keep only entries with this share of Chinese characters (0: all) */
    size_t dropped;       /* entries that had less */
} corpus;

static inline void corpus_free(corpus *c) {
    free(c->cp);
    free(c->start);
    *c = (corpus){0};
}

static inline bool corpus_push(corpus *c, uint32_t x) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 1 << 16;
        uint32_t *grown = realloc(c->cp, cap * sizeof *grown);
        if (!grown) return false;
        c->cp = grown;
        c->cap = cap;
    }
    c->cp[c->n++] = x;
    return true;
}

/* Starts an entry at the current end (and keeps one slot for the end). */
static inline bool corpus_mark(corpus *c) {
    if (c->entries + 2 > c->entries_cap) {
        size_t cap = c->entries_cap ? 2 * c->entries_cap : 1024;
        size_t *grown = realloc(c->start, cap * sizeof *grown);
        if (!grown) return false;
        c->start = grown;
        c->entries_cap = cap;
    }
    c->start[c->entries++] = c->n;
    c->start[c->entries] = c->n;
    return true;
}

/* The code point at s (of n bytes left) and its length in *len; U+FFFD
 * and 1 for a byte that does not begin a valid sequence. */
static inline uint32_t utf8_decode(const unsigned char *s, size_t n, size_t *len) {
    *len = 1;
    if (s[0] < 0x80) return s[0];
    size_t k = s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC2 && s[0] < 0xE0 ? 2 : 0;
    if (!k || k > n) return 0xFFFD;
    uint32_t x = s[0] & (0x7F >> k);
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0xFFFD;
        x = x << 6 | (s[i] & 0x3F);
    }
    static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (x < least[k] || x > 0x10FFFF || (x >= 0xD800 && x <= 0xDFFF)) return 0xFFFD; /* overlong, surrogate */
    *len = k;
    return x;
}

/* x as UTF-8 into out (4 bytes at most); returns the length. */
static inline size_t utf8_encode(uint32_t x, char *out) {
    if (x < 0x80) return out[0] = (char)x, 1;
    if (x < 0x800) return out[0] = (char)(0xC0 | x >> 6), out[1] = (char)(0x80 | (x & 0x3F)), 2;
    if (x < 0x10000)
        return out[0] = (char)(0xE0 | x >> 12), out[1] = (char)(0x80 | (x >> 6 & 0x3F)),
               out[2] = (char)(0x80 | (x & 0x3F)), 3;
    return out[0] = (char)(0xF0 | x >> 18), out[1] = (char)(0x80 | (x >> 12 & 0x3F)),
           out[2] = (char)(0x80 | (x >> 6 & 0x3F)), out[3] = (char)(0x80 | (x & 0x3F)), 4;
}

static inline bool is_chinese(uint32_t x) { /* CJK ideographs and punctuation, full-width forms */
    return (x >= 0x4E00 && x <= 0x9FFF) || (x >= 0x3400 && x <= 0x4DBF) || (x >= 0x3000 && x <= 0x303F) ||
           (x >= 0xFF00 && x <= 0xFFEF);
}

/* Is the entry cp[begin, n) worth keeping: not blank, and with at least
 * min_chinese of its visible characters Chinese?  fortunes-zh's file
 * "chinese" holds, beside classical sayings and poems, pages of the Debian
 * reference manual (tables drawn with box characters, shell commands),
 * which the share of Chinese characters tells apart. */
static inline bool entry_kept(const corpus *c, size_t begin) {
    size_t visible = 0, chinese = 0;
    for (size_t j = begin; j < c->n; j++) {
        uint32_t x = c->cp[j];
        if (x == ' ' || x == '\n' || x == '\t' || x == 0xA0 || x == 0x3000) continue;
        visible++;
        chinese += is_chinese(x);
    }
    return visible > 0 && (double)chinese >= c->min_chinese * (double)visible;
}

/* Appends one file's entries; 1 with the reason printed on failure.  A file
 * without "%" lines is cut into entries of about 2000 characters at line
 * ends, so that any text can be split. */
static inline int corpus_read(corpus *c, const char *path, const char *install) {
    size_t size = 0;
    FILE *f = nb_file_open_read(path, &size);
    if (!f) {
        fprintf(stderr, "gpt: %s%s%s\n", nb_last_error(), install ? " (install it with: " : "", install ? install : "");
        return 1;
    }
    unsigned char *bytes = malloc(size + 1);
    size_t got = bytes ? fread(bytes, 1, size, f) : 0;
    fclose(f);
    if (!bytes || got != size) {
        fprintf(stderr, "gpt: cannot read %s (%s)\n", path, bytes ? "short read" : "out of memory");
        free(bytes);
        return 1;
    }
    bool has_separators = false;
    for (size_t i = 0; i + 1 < size && !has_separators; i++)
        has_separators = bytes[i] == '%' && bytes[i + 1] == '\n' && (i == 0 || bytes[i - 1] == '\n');
    bool ok = corpus_mark(c), line_start = true;
    size_t entry_begin = c->n;
    for (size_t i = 0; ok && i < size;) {
        if (bytes[i] == 0x1B && i + 1 < size && bytes[i + 1] == '[') { /* a terminal escape: ESC [ digits ; letter */
            i += 2;
            while (i < size && ((bytes[i] >= '0' && bytes[i] <= '9') || bytes[i] == ';')) i++;
            i += i < size;
            continue;
        }
        if (bytes[i] == '\r') {
            i++;
            continue;
        }
        if (line_start && has_separators && bytes[i] == '%' && (i + 1 == size || bytes[i + 1] == '\n')) {
            i += 2;
            if (!entry_kept(c, entry_begin)) {
                c->dropped += c->n > entry_begin;
                c->n = entry_begin;
            } else ok = corpus_push(c, '%') && corpus_push(c, '\n') && corpus_mark(c);
            entry_begin = c->n;
            continue;
        }
        size_t len;
        uint32_t x = utf8_decode(bytes + i, size - i, &len);
        i += len;
        ok = corpus_push(c, x);
        line_start = x == '\n';
        if (ok && !has_separators && line_start && c->n - entry_begin >= 2000) {
            ok = corpus_mark(c);
            entry_begin = c->n;
        }
    }
    free(bytes);
    if (ok && c->n > entry_begin && has_separators && !entry_kept(c, entry_begin)) c->dropped++, c->n = entry_begin;
    if (ok && c->n > entry_begin && has_separators) ok = corpus_push(c, '%') && corpus_push(c, '\n');
    if (ok && c->n == entry_begin) c->entries--; /* the file ended with its last entry */
    if (ok) c->start[c->entries] = c->n;
    if (!ok) fprintf(stderr, "gpt: out of memory reading %s\n", path);
    return ok ? 0 : 1;
}

/* ------------------------------------------------------------ vocabulary */

typedef struct {
    uint32_t *chars; /* the distinct code points, ascending; a token is an index */
    size_t size;
} vocabulary;

static inline int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static inline bool vocabulary_of(const corpus *c, vocabulary *v) {
    if (!(v->chars = malloc((c->n ? c->n : 1) * sizeof *v->chars))) return false;
    memcpy(v->chars, c->cp, c->n * sizeof *v->chars);
    qsort(v->chars, c->n, sizeof *v->chars, cmp_u32);
    size_t kept = 0;
    for (size_t i = 0; i < c->n; i++)
        if (!kept || v->chars[kept - 1] != v->chars[i]) v->chars[kept++] = v->chars[i];
    v->size = kept;
    return true;
}

static inline size_t token_of(const vocabulary *v, uint32_t x) {
    const uint32_t *at = bsearch(&x, v->chars, v->size, sizeof x, cmp_u32);
    return at ? (size_t)(at - v->chars) : v->size; /* every corpus character is in it */
}

/* A fingerprint of the vocabulary (FNV-1a), so that a checkpoint is not
 * resumed on another text. */
static inline uint32_t vocabulary_hash(const vocabulary *v) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < v->size; i++)
        for (int b = 0; b < 32; b += 8) h = (h ^ (v->chars[i] >> b & 0xFF)) * 16777619u;
    return h;
}

/* Tokens [from, to) printed as UTF-8. */
static inline void print_tokens(FILE *out, const vocabulary *v, const size_t *tokens, size_t from, size_t to) {
    for (size_t i = from; i < to; i++) {
        char buf[4];
        size_t len = utf8_encode(v->chars[tokens[i]], buf);
        fwrite(buf, 1, len, out);
    }
}

/* ------------------------------------------------------------ the split */

/* The entries as two texts of tokens: a seeded tenth (at least one entry)
 * held out, the rest to train on, each in the files' order. */
static inline bool split_text(const corpus *c, const vocabulary *v, nb_rng *rng, size_t **train, size_t *n_train,
                       size_t **valid, size_t *n_valid, size_t *held_entries) {
    size_t *order = malloc(c->entries * sizeof *order);
    bool *held = calloc(c->entries, sizeof *held);
    *train = malloc(c->n * sizeof **train);
    *valid = malloc(c->n * sizeof **valid);
    bool ok = order && held && *train && *valid;
    if (ok) {
        for (size_t i = 0; i < c->entries; i++) order[i] = i;
        for (size_t i = c->entries - 1; i > 0; i--) {
            size_t j = nb_rng_next(rng) % (i + 1), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        *held_entries = c->entries / 10 ? c->entries / 10 : 1;
        for (size_t i = 0; i < *held_entries; i++) held[order[i]] = true;
        *n_train = *n_valid = 0;
        for (size_t e = 0; e < c->entries; e++)
            for (size_t i = c->start[e]; i < c->start[e + 1]; i++) {
                size_t token = token_of(v, c->cp[i]);
                if (held[e]) (*valid)[(*n_valid)++] = token;
                else (*train)[(*n_train)++] = token;
            }
    }
    free(order);
    free(held);
    return ok;
}

/* ------------------------------------------------------------ the bigram model */

/* P(b | a) counted from the training text with add-k smoothing:
 *     (count(a b) + k) / (count(a) + k V)
 * The pairs are counted by sorting their keys a V + b, so a vocabulary of
 * thousands of Chinese characters needs no V x V table. */
typedef struct {
    uint64_t *keys;   /* distinct pairs, ascending */
    uint32_t *counts; /* how often each occurs */
    double *rows;     /* count(a): pairs that start with a */
    size_t pairs, V;
} bigram;

static inline int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static inline bool bigram_count(bigram *g, const size_t *text, size_t n, size_t V) {
    *g = (bigram){malloc((n ? n : 1) * sizeof(uint64_t)), malloc((n ? n : 1) * sizeof(uint32_t)),
                  calloc(V, sizeof(double)), 0, V};
    if (!g->keys || !g->counts || !g->rows) return false;
    for (size_t i = 1; i < n; i++) g->keys[i - 1] = (uint64_t)text[i - 1] * V + text[i], g->rows[text[i - 1]]++;
    qsort(g->keys, n ? n - 1 : 0, sizeof *g->keys, cmp_u64);
    for (size_t i = 0; i + 1 < n; i++) {
        if (g->pairs && g->keys[g->pairs - 1] == g->keys[i]) g->counts[g->pairs - 1]++;
        else g->keys[g->pairs] = g->keys[i], g->counts[g->pairs++] = 1;
    }
    return true;
}

static inline void bigram_free(bigram *g) {
    free(g->keys);
    free(g->counts);
    free(g->rows);
}

static inline double bigram_count_of(const bigram *g, size_t a, size_t b) {
    uint64_t key = (uint64_t)a * g->V + b;
    const uint64_t *at = bsearch(&key, g->keys, g->pairs, sizeof key, cmp_u64);
    return at ? g->counts[at - g->keys] : 0;
}

/* Nats per character of the targets text[i + 1] given text[i], for i in
 * [w, w + T) at each window start w of starts[0..windows). */
static inline double bigram_nats(const bigram *g, double k, const size_t *text, const size_t *starts, size_t windows,
                          size_t T) {
    double nats = 0;
    for (size_t w = 0; w < windows; w++)
        for (size_t i = starts[w]; i < starts[w] + T; i++)
            nats -= log((bigram_count_of(g, text[i], text[i + 1]) + k) / (g->rows[text[i]] + k * (double)g->V));
    return nats / (double)(windows * T);
}

#endif
