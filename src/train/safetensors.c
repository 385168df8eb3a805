/*
 * Parameters in the safetensors format, the one PyTorch users exchange
 * weights in (https://github.com/huggingface/safetensors, format only; this
 * is our own reader and writer):
 *
 *   u64 little-endian      N, the header's length in bytes
 *   N bytes                a JSON object, UTF-8, padded with spaces:
 *                            {"__metadata__": {"format": "pt"},
 *                             "fc.weight": {"dtype": "F32", "shape": [10, 784],
 *                                           "data_offsets": [0, 31360]}, ...}
 *   the data               each tensor's values, row-major, little-endian, at
 *                          its [begin, end) offsets from here; the tensors
 *                          tile the data exactly, with no gaps or overlaps
 *
 * Loading is as strict as nabla's own format: every parameter of the set
 * must be in the file and every tensor of the file in the set, with the same
 * shape (PyTorch's load_state_dict with strict=True), and nothing in memory
 * changes unless the whole file checks out.  F16, BF16, F32 and F64 tensors
 * are read and converted to the parameter's dtype, as load_state_dict
 * converts; I64, I32, I16, I8, U8 and BOOL tensors (batch norm's
 * num_batches_tracked, masks, counts) are read into a parameter only where
 * each value is exactly a value of its dtype, and refused, naming the
 * value, where one is not; other dtypes are refused by name.  Saving writes F32 or F64 as
 * the parameters are, padded so that the data starts at a multiple of 8.
 * A checkpoint (src/train/checkpoint.c) adds its optimizer's state as more
 * tensors, named under NB_RESERVED_PREFIX, and its scalars as metadata
 * strings.
 */
#include "nabla_train.h"
#include "param_files.h"
#include "../escape.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The largest header read: the reference implementation's limit too. */
#define MAX_HEADER_BYTES ((uint64_t)100 * 1000 * 1000)

/* The floating-point dtypes, then the integer ones (PyTorch's int64,
 * int32, int16, int8, uint8 and bool: batch norm's num_batches_tracked is
 * I64), which are read into float parameters only where every value is
 * exact (see exact_integer). */
typedef enum { ST_F16, ST_BF16, ST_F32, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL, ST_OTHER } st_dtype;
static const char *const dtype_names[] = {"F16", "BF16", "F32", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"};
static const size_t dtype_bytes[] = {2, 2, 4, 8, 8, 4, 2, 1, 1, 1};
static bool integer_dtype(st_dtype dt) { return dt >= ST_I64 && dt <= ST_BOOL; }

/* One tensor of the header. */
typedef struct {
    char name[NB_FILE_NAME_MAX];
    st_dtype dtype;
    int ndim;
    size_t shape[NB_MAX_DIMS];
    uint64_t begin, end;       /* offsets in the data */
    nb_tensor *param;          /* the parameter (or state) it loads into; NULL: passed over */
} st_tensor;

/* ---------------------------------------------------------------- writing */

static void put_bytes(void *w, const char *s, size_t n) { nb_bytes_put(w, s, n); }

/* Appends s as a JSON string (quoted and escaped: src/escape.h). */
static void put_json_string(nb_bytes *w, const char *s) {
    nb_bytes_put(w, "\"", 1);
    nb_escape(NB_ESC_JSON, s, put_bytes, w);
    nb_bytes_put(w, "\"", 1);
}

static void put_text(nb_bytes *w, const char *s) { nb_bytes_put(w, s, strlen(s)); }

/* Is s valid UTF-8 (JSON text must be)? */
static bool valid_utf8(const unsigned char *s, size_t n, size_t *bad_at) {
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len && i + len <= n;
        for (size_t k = 1; ok && k < len; k++) ok = (s[i + k] & 0xC0) == 0x80;
        if (ok && len > 1) { /* no overlong forms, surrogates or values past U+10FFFF */
            uint32_t cp = c & (0x7F >> len);
            for (size_t k = 1; k < len; k++) cp = (cp << 6) | (s[i + k] & 0x3F);
            static const uint32_t smallest[5] = {0, 0, 0x80, 0x800, 0x10000};
            ok = cp >= smallest[len] && cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF);
        }
        if (!ok) {
            *bad_at = i;
            return false;
        }
        i += len;
    }
    return true;
}

nb_status nb_params_save_safetensors(const nb_params *ps, const char *path) {
    static const char who[] = "nb_params_save_safetensors";
    if (!ps || !path) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "%s: %s is NULL", who, ps ? "the path" : "the parameter set");
        return NB_ERR_NULL;
    }
    return nb_safetensors_save(who, ps, NULL, path);
}

/* The i-th tensor written: the parameters, then the extras. */
static const nb_tensor *saved_tensor(const nb_params *ps, const nb_file_extras *x, size_t i, const char **name) {
    size_t n = nb_params_count(ps);
    if (i < n || !x) {
        const nb_tensor *t = nb_params_at(ps, i);
        *name = nb_tensor_name(t);
        return t;
    }
    *name = x->extra[i - n].name;
    return x->extra[i - n].t;
}

nb_status nb_safetensors_save(const char *who, const nb_params *ps, const nb_file_extras *x, const char *path) {
    size_t n = nb_params_count(ps) + (x ? x->n_extra : 0);
    nb_bytes header = {0}, file = {0};
    put_text(&header, "{\"__metadata__\":{\"format\":\"pt\"");
    for (size_t i = 0; x && x->meta && i < x->meta->n; i++) {
        put_text(&header, ",");
        put_json_string(&header, x->meta->e[i].key);
        put_text(&header, ":");
        put_json_string(&header, x->meta->e[i].value);
    }
    put_text(&header, "}");
    uint64_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name;
        const nb_tensor *t = saved_tensor(ps, x, i, &name);
        size_t bad;
        if (!valid_utf8((const unsigned char *)name, strlen(name), &bad)) {
            nb_set_error(NULL, NB_ERR_ARG, NULL, 0,
                         "%s: parameter %zu's name is not valid UTF-8 (byte %zu); safetensors names are JSON text",
                         who, i, bad);
            nb_free(header.buf);
            return NB_ERR_ARG;
        }
        char text[64];
        put_text(&header, ",");
        put_json_string(&header, name);
        snprintf(text, sizeof text, ":{\"dtype\":\"%s\",\"shape\":[", t->dtype == NB_F32 ? "F32" : "F64");
        put_text(&header, text);
        for (int d = 0; d < t->ndim; d++) {
            snprintf(text, sizeof text, "%s%zu", d ? "," : "", t->shape[d]);
            put_text(&header, text);
        }
        uint64_t bytes = (uint64_t)t->size * nb_dtype_size(t->dtype);
        uint64_t end = offset + bytes;
        snprintf(text, sizeof text, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                 (unsigned long long)end);
        put_text(&header, text);
        offset += bytes;
    }
    put_text(&header, "}");
    while (!header.failed && header.len % 8) put_text(&header, " "); /* the data starts 8-aligned */
    nb_bytes_put_uint(&file, header.len, 8);
    if (!header.failed) nb_bytes_put(&file, header.buf, header.len);
    for (size_t i = 0; i < n; i++) {
        const char *name;
        nb_bytes_put_values(&file, saved_tensor(ps, x, i, &name));
    }
    nb_status st;
    if (header.failed || file.failed) {
        st = NB_ERR_NOMEM;
        nb_set_error(NULL, st, NULL, 0, "%s: out of memory writing %s", who, path);
    } else {
        st = nb_write_whole_file(who, path, file.buf, file.len, true);
    }
    nb_free(header.buf);
    nb_free(file.buf);
    return st;
}

/* ---------------------------------------------------------------- the JSON header */

/* A strict reader for the header's subset of JSON: objects, strings,
 * arrays of non-negative integers.  Errors give the byte offset in the
 * header. */
typedef struct {
    const unsigned char *p, *start, *end;
    const char *who, *path;
} json;

static bool json_fail(json *j, const char *expected) {
    if (j->p >= j->end)
        nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s: the JSON header ends early (expected %s)", j->who, j->path,
                     expected);
    else
        nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s: the JSON header is malformed at byte %zu ('%c'): expected %s",
                     j->who, j->path, (size_t)(j->p - j->start), *j->p >= 0x20 && *j->p < 0x7F ? *j->p : '?',
                     expected);
    return false;
}

static void skip_space(json *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static bool expect(json *j, char c, const char *what) {
    skip_space(j);
    if (j->p < j->end && *j->p == (unsigned char)c) {
        j->p++;
        return true;
    }
    return json_fail(j, what);
}

/* Is the next significant byte c?  Consumes it if so. */
static bool accept(json *j, char c) {
    skip_space(j);
    if (j->p < j->end && *j->p == (unsigned char)c) {
        j->p++;
        return true;
    }
    return false;
}

static int hex_digit(unsigned char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static bool read_hex4(json *j, uint32_t *v) {
    *v = 0;
    for (int k = 0; k < 4; k++) {
        int h = j->p < j->end ? hex_digit(*j->p) : -1;
        if (h < 0) return json_fail(j, "4 hexadecimal digits after \\u");
        *v = (*v << 4) | (uint32_t)h;
        j->p++;
    }
    return true;
}

/* Reads a string into out (cap bytes with the NUL; *len is its full length
 * even when longer than fits); escapes are decoded to UTF-8.  The header's
 * bytes were checked as UTF-8 before parsing. */
static bool read_string(json *j, char *out, size_t cap, size_t *len) {
    if (!expect(j, '"', "a string")) return false;
    size_t n = 0;
    for (;;) {
        if (j->p >= j->end) return json_fail(j, "the end of the string");
        unsigned char c = *j->p++;
        unsigned char utf8[4];
        size_t k = 0;
        if (c == '"') break;
        if (c < 0x20) {
            j->p--;
            return json_fail(j, "no control character inside a string");
        }
        if (c != '\\') {
            utf8[k++] = c;
        } else {
            if (j->p >= j->end) return json_fail(j, "an escape");
            unsigned char e = *j->p++;
            const char *simple = strchr("\"\\/bfnrt", e);
            if (simple && e) {
                static const char decoded[] = "\"\\/\b\f\n\r\t";
                utf8[k++] = (unsigned char)decoded[simple - "\"\\/bfnrt"];
            } else if (e == 'u') {
                uint32_t cp, low;
                if (!read_hex4(j, &cp)) return false;
                if (cp >= 0xD800 && cp <= 0xDBFF) { /* a surrogate pair */
                    if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
                        return json_fail(j, "the low half of a surrogate pair");
                    j->p += 2;
                    if (!read_hex4(j, &low)) return false;
                    if (low < 0xDC00 || low > 0xDFFF) return json_fail(j, "the low half of a surrogate pair");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    return json_fail(j, "no lone low surrogate");
                }
                if (cp == 0) return json_fail(j, "no NUL character (\\u0000) in a name");
                if (cp < 0x80) {
                    utf8[k++] = (unsigned char)cp;
                } else if (cp < 0x800) {
                    utf8[k++] = (unsigned char)(0xC0 | (cp >> 6));
                    utf8[k++] = (unsigned char)(0x80 | (cp & 0x3F));
                } else if (cp < 0x10000) {
                    utf8[k++] = (unsigned char)(0xE0 | (cp >> 12));
                    utf8[k++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
                    utf8[k++] = (unsigned char)(0x80 | (cp & 0x3F));
                } else {
                    utf8[k++] = (unsigned char)(0xF0 | (cp >> 18));
                    utf8[k++] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
                    utf8[k++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
                    utf8[k++] = (unsigned char)(0x80 | (cp & 0x3F));
                }
            } else {
                j->p--;
                return json_fail(j, "one of the escapes \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX");
            }
        }
        for (size_t b = 0; b < k; b++, n++)
            if (out && n + 1 < cap) out[n] = (char)utf8[b];
    }
    if (out && cap) {
        out[n < cap ? n : cap - 1] = '\0';
        if (n >= cap) out[nb_utf8_prefix(out, cap - 1)] = '\0'; /* cut at a character */
    }
    *len = n;
    return true;
}

/* A non-negative integer without sign, fraction or exponent (the format's
 * shapes and offsets), at most 2^64 - 1. */
static bool read_uint(json *j, uint64_t *v) {
    skip_space(j);
    if (j->p >= j->end || *j->p < '0' || *j->p > '9') return json_fail(j, "a non-negative integer");
    if (*j->p == '0' && j->end - j->p > 1 && j->p[1] >= '0' && j->p[1] <= '9')
        return json_fail(j, "an integer without leading zeros");
    *v = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        unsigned digit = (unsigned)(*j->p - '0');
        if (*v > (UINT64_MAX - digit) / 10) return json_fail(j, "an integer below 2^64");
        *v = *v * 10 + digit;
        j->p++;
    }
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
        return json_fail(j, "an integer (no fraction or exponent)");
    return true;
}

/* A string of any length, into memory of its own (nb_free it). */
static char *read_whole_string(json *j, size_t *len) {
    skip_space(j);
    const unsigned char *at = j->p;
    if (!read_string(j, NULL, 0, len)) return NULL;
    char *s = nb_malloc(*len + 1);
    if (!s) {
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory reading %s", j->who, j->path);
        return NULL;
    }
    j->p = at;
    read_string(j, s, *len + 1, len);
    return s;
}

/* "__metadata__": an object of strings, kept in meta. */
static bool read_metadata(json *j, nb_meta *meta) {
    if (!expect(j, '{', "'{' (the metadata is an object of strings)")) return false;
    if (accept(j, '}')) return true;
    do {
        size_t key_len, len;
        char *key = read_whole_string(j, &key_len), *value = NULL;
        bool ok = key && expect(j, ':', "':'") && (value = read_whole_string(j, &len));
        if (ok) nb_meta_put(meta, key, key_len, value, len);
        nb_free(key);
        nb_free(value);
        if (!ok) return false;
        if (meta->failed) {
            nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory reading %s", j->who, j->path);
            return false;
        }
    } while (accept(j, ','));
    if (!expect(j, '}', "',' or '}'")) return false;
    const char *twice = nb_meta_duplicate(meta);
    if (twice) {
        nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s: the metadata holds the key '%.80s' twice", j->who, j->path,
                     twice);
        return false;
    }
    return true;
}

/* One tensor's object: dtype, shape and data_offsets, each once. */
static bool read_tensor(json *j, st_tensor *t) {
    bool have_dtype = false, have_shape = false, have_offsets = false;
    if (!expect(j, '{', "'{' (a tensor is an object)")) return false;
    if (!accept(j, '}')) {
        do {
            char key[16] = "";
            size_t len = 0;
            const unsigned char *at = j->p;
            if (!read_string(j, key, sizeof key, &len) || !expect(j, ':', "':'")) return false;
            if (!strcmp(key, "dtype") && !have_dtype) {
                char dt[8];
                len = 0;
                if (!read_string(j, dt, sizeof dt, &len)) return false;
                t->dtype = ST_OTHER;
                for (int k = 0; k < ST_OTHER; k++)
                    if (len < sizeof dt && !strcmp(dt, dtype_names[k])) t->dtype = (st_dtype)k;
                if (t->dtype == ST_OTHER) {
                    nb_set_error(NULL, NB_ERR_VALUE, NULL, 0,
                                 "%s: %s: tensor '%s' has dtype %s; nabla reads F16, BF16, F32, F64, I64, I32, I16, "
                                 "I8, U8 and BOOL", j->who,
                                 j->path, t->name, len < sizeof dt ? dt : "(a long string)");
                    return false;
                }
                have_dtype = true;
            } else if (!strcmp(key, "shape") && !have_shape) {
                t->ndim = 0;
                if (!expect(j, '[', "'[' (a shape is an array)")) return false;
                if (!accept(j, ']')) {
                    do {
                        uint64_t size = 0;
                        if (!read_uint(j, &size)) return false;
                        if (t->ndim == NB_MAX_DIMS) {
                            nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s: tensor '%s' has more than %d dimensions",
                                         j->who, j->path, t->name, NB_MAX_DIMS);
                            return false;
                        }
                        t->shape[t->ndim++] = (size_t)size;
                    } while (accept(j, ','));
                    if (!expect(j, ']', "',' or ']'")) return false;
                }
                have_shape = true;
            } else if (!strcmp(key, "data_offsets") && !have_offsets) {
                if (!expect(j, '[', "'[' (data_offsets is [begin, end])") || !read_uint(j, &t->begin) ||
                    !expect(j, ',', "',' (data_offsets is [begin, end])") || !read_uint(j, &t->end) ||
                    !expect(j, ']', "']' (data_offsets is [begin, end])"))
                    return false;
                have_offsets = true;
            } else {
                j->p = at;
                nb_set_error(NULL, NB_ERR_VALUE, NULL, 0,
                             "%s: %s: tensor '%s' has %s field '%.*s' at byte %zu (a tensor has dtype, shape and "
                             "data_offsets, once each)",
                             j->who, j->path, t->name,
                             strcmp(key, "dtype") != 0 && strcmp(key, "shape") != 0 && strcmp(key, "data_offsets") != 0
                                 ? "an unknown"
                                 : "a second",
                             (int)(len < sizeof key ? len : sizeof key - 1), key, (size_t)(at - j->start));
                return false;
            }
        } while (accept(j, ','));
        if (!expect(j, '}', "',' or '}'")) return false;
    }
    if (!have_dtype || !have_shape || !have_offsets) {
        nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s: tensor '%s' has no %s", j->who, j->path, t->name,
                     !have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets");
        return false;
    }
    return true;
}

/* The header's tensors, in the file's order, into a growing array. */
static nb_status read_header(json *j, nb_meta *meta, st_tensor **out, size_t *count) {
    size_t cap = 0;
    *out = NULL;
    *count = 0;
    if (!expect(j, '{', "'{' (the header is a JSON object)")) return NB_ERR_VALUE;
    bool seen_metadata = false;
    if (!accept(j, '}')) {
        do {
            char name[NB_FILE_NAME_MAX];
            size_t len;
            skip_space(j);
            const unsigned char *at = j->p;
            if (!read_string(j, name, sizeof name, &len) || !expect(j, ':', "':'")) return NB_ERR_VALUE;
            if (!strcmp(name, "__metadata__") && len == strlen("__metadata__")) {
                if (seen_metadata) {
                    nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s: the header has __metadata__ twice", j->who,
                                 j->path);
                    return NB_ERR_VALUE;
                }
                seen_metadata = true;
                if (!read_metadata(j, meta)) return nb_last_status();
                continue;
            }
            if (len >= (nb_is_reserved_name(name, len) ? NB_FILE_NAME_MAX : NB_NAME_MAX) || len == 0) {
                nb_set_error(NULL, NB_ERR_VALUE, NULL, 0,
                             "%s: %s: the tensor named at byte %zu ('%s%s') has a name of %zu bytes; nabla's names "
                             "have 1 to %d",
                             j->who, j->path, (size_t)(at - j->start), name, len >= NB_FILE_NAME_MAX ? "..." : "", len,
                             NB_NAME_MAX - 1);
                return NB_ERR_VALUE;
            }
            for (size_t k = 0; k < *count; k++)
                if (!strcmp((*out)[k].name, name)) {
                    nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s: the header names tensor '%s' twice", j->who,
                                 j->path, name);
                    return NB_ERR_VALUE;
                }
            if (*count == cap) {
                cap = cap ? 2 * cap : 16;
                st_tensor *grown = nb_realloc(*out, cap * sizeof *grown);
                if (!grown) {
                    nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory reading %s", j->who, j->path);
                    return NB_ERR_NOMEM;
                }
                *out = grown;
            }
            st_tensor *t = &(*out)[(*count)++];
            memset(t, 0, sizeof *t);
            memcpy(t->name, name, len + 1);
            if (!read_tensor(j, t)) return NB_ERR_VALUE;
        } while (accept(j, ','));
        if (!expect(j, '}', "',' or '}'")) return NB_ERR_VALUE;
    }
    skip_space(j);
    if (j->p != j->end) return json_fail(j, "nothing but spaces after the header's object"), NB_ERR_VALUE;
    return NB_OK;
}

/* ---------------------------------------------------------------- reading */

/* IEEE half precision to single: 1 sign bit, 5 exponent bits (bias 15),
 * 10 fraction bits. */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exponent = (h >> 10) & 0x1F, fraction = h & 0x3FF, bits;
    if (exponent == 0) { /* zero or subnormal: fraction x 2^-24 */
        float v = ldexpf((float)fraction, -24);
        return sign ? -v : v;
    }
    if (exponent == 31)
        bits = sign | 0x7F800000u | (fraction << 13); /* infinity or NaN */
    else
        bits = sign | ((exponent + 112) << 23) | (fraction << 13); /* rebias 15 -> 127 */
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Element k of an integer tensor's data in the file, sign-extended. */
static int64_t file_integer(const unsigned char *data, st_dtype dt, size_t k) {
    uint64_t bits = nb_get_uint_le(data + k * dtype_bytes[dt], (int)dtype_bytes[dt]);
    switch (dt) {
    case ST_I32: return (int32_t)(uint32_t)bits;
    case ST_I16: return (int16_t)(uint16_t)bits;
    case ST_I8: return (int8_t)(uint8_t)bits;
    case ST_U8: case ST_BOOL: return (int64_t)bits;
    default: return (int64_t)bits; /* I64: two's complement */
    }
}

/* Whether v is a value of a parameter of dtype `to`, exactly: float64
 * holds every integer up to 2^53 in magnitude, float32 up to 2^24, and
 * some larger ones (multiples of powers of two).  (A value that rounds to
 * 2^63 is out of int64's range, hence not v.) */
static bool exact_integer(int64_t v, nb_dtype to) {
    double d = to == NB_F32 ? (double)(float)v : (double)v;
    return d < 9223372036854775808.0 && (int64_t)d == v;
}

/* Element k of a tensor's data in the file, as a double. */
static double file_value(const unsigned char *data, st_dtype dt, size_t k) {
    if (integer_dtype(dt)) return (double)file_integer(data, dt, k);
    uint64_t bits = nb_get_uint_le(data + k * dtype_bytes[dt], (int)dtype_bytes[dt]);
    switch (dt) {
    case ST_F16: return half_to_float((uint16_t)bits);
    case ST_BF16: { /* the top half of a float32 */
        uint32_t b32 = (uint32_t)bits << 16;
        float f;
        memcpy(&f, &b32, 4);
        return f;
    }
    case ST_F32: {
        uint32_t b32 = (uint32_t)bits;
        float f;
        memcpy(&f, &b32, 4);
        return f;
    }
    default: {
        double d;
        memcpy(&d, &bits, 8);
        return d;
    }
    }
}

static int by_begin(const void *a, const void *b) {
    const st_tensor *x = *(st_tensor *const *)a, *y = *(st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* An integer tensor loads into a float parameter only if every value is
 * exact there (and a BOOL's bytes are 0 or 1, as PyTorch writes them):
 * otherwise it is refused, naming the first value that is not. */
static nb_status check_integers(const char *who, const char *path, const st_tensor *t, const unsigned char *data) {
    const nb_tensor *p = t->param;
    for (size_t k = 0; k < p->size; k++) {
        int64_t v = file_integer(data + t->begin, t->dtype, k);
        if (t->dtype == ST_BOOL && v > 1) {
            nb_set_error(NULL, NB_ERR_VALUE, NULL, 0,
                         "%s: %s: '%s' is BOOL but its element %zu is the byte %lld (a bool is 0 or 1)", who, path,
                         t->name, k, (long long)v);
            return NB_ERR_VALUE;
        }
        if (!exact_integer(v, p->dtype)) {
            nb_set_error(NULL, NB_ERR_VALUE, NULL, 0,
                         "%s: %s: '%s' is %s and its element %zu, %lld, is not exactly a %s value "
                         "(float32 holds integers exactly up to 2^24, float64 up to 2^53)%s",
                         who, path, t->name, dtype_names[t->dtype], k, (long long)v,
                         p->dtype == NB_F32 ? "float32" : "float64",
                         p->dtype == NB_F32 ? "; make the parameter float64" : "");
            return NB_ERR_VALUE;
        }
    }
    return NB_OK;
}

/* Every check of the tensors against the data and the parameter set. */
static nb_status check_tensors(const char *who, const char *path, nb_params *ps, const nb_file_extras *x,
                               st_tensor *ts, size_t n, const unsigned char *data, uint64_t data_len) {
    size_t matched = 0;
    char sf[128], sm[128];
    for (size_t i = 0; i < n; i++) {
        st_tensor *t = &ts[i];
        uint64_t elements = 1;
        bool overflow = false;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] && elements > UINT64_MAX / 8 / t->shape[d]) overflow = true;
            elements *= t->shape[d];
        }
        if (t->begin > t->end || t->end > data_len) {
            nb_set_error(NULL, NB_ERR_VALUE, NULL, 0,
                         "%s: %s: tensor '%s' has data_offsets [%llu, %llu] outside the %llu bytes of data%s", who,
                         path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                         (unsigned long long)data_len, t->begin > t->end ? " (begin after end)" : " (truncated file?)");
            return NB_ERR_VALUE;
        }
        uint64_t needed = elements * dtype_bytes[t->dtype];
        if (overflow || needed != t->end - t->begin) {
            nb_set_error(NULL, NB_ERR_VALUE, NULL, 0,
                         "%s: %s: tensor '%s' is %s %s, which needs %s bytes, but its data_offsets span %llu", who,
                         path, t->name, dtype_names[t->dtype], nb_format_shape(t->ndim, t->shape, sf, sizeof sf),
                         overflow ? "more than 2^61" : (snprintf(sm, sizeof sm, "%llu", (unsigned long long)needed), sm),
                         (unsigned long long)(t->end - t->begin));
            return NB_ERR_VALUE;
        }
        bool skip, reserved = nb_is_reserved_name(t->name, strlen(t->name));
        t->param = nb_file_target(ps, x, t->name, &skip);
        if (!t->param && skip) continue; /* a checkpoint's state, passed over (it still tiles the data) */
        if (!t->param) {
            nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s has a tensor '%s' that the %s does not", who, path,
                         t->name, reserved ? "optimizer" : "model");
            return NB_ERR_VALUE;
        }
        matched++;
        const nb_tensor *p = t->param;
        bool same = p->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = p->shape[d] == t->shape[d];
        if (!same || (reserved && t->dtype != (p->dtype == NB_F32 ? ST_F32 : ST_F64))) {
            nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s: '%s' is %s%s%s in the file but %s%s%s in the %s", who,
                         path, t->name, reserved ? dtype_names[t->dtype] : "", reserved ? " " : "",
                         nb_format_shape(t->ndim, t->shape, sf, sizeof sf), reserved ? dtype_names[p->dtype == NB_F32 ? ST_F32 : ST_F64] : "",
                         reserved ? " " : "", nb_format_shape(p->ndim, p->shape, sm, sizeof sm),
                         reserved ? "optimizer" : "model");
            return NB_ERR_VALUE;
        }
        if (integer_dtype(t->dtype) && check_integers(who, path, t, data) != NB_OK) return NB_ERR_VALUE;
    }
    size_t count = nb_params_count(ps), n_extra = x && !x->skip_reserved ? x->n_extra : 0;
    if (matched < count + n_extra) { /* every name in the file is a target, once: some target is missing */
        for (size_t k = 0; k < count + n_extra; k++) {
            const nb_tensor *p = k < count ? nb_params_at(ps, k) : x->extra[k - count].t;
            bool found = false;
            for (size_t i = 0; i < n && !found; i++) found = ts[i].param == p;
            if (!found && k < count)
                nb_set_error(NULL, NB_ERR_VALUE, NULL, 0,
                             "%s: %s holds %zu tensor%s and has no '%s', a parameter of the model (%zu parameters)",
                             who, path, n, n == 1 ? "" : "s", nb_tensor_name(p), count);
            else if (!found)
                nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s has no '%s', a part of the optimizer's state", who,
                             path, x->extra[k - count].name);
            if (!found) return NB_ERR_VALUE;
        }
    }
    /* The tensors must tile the data: sorted by offset, each begins where
     * the one before ends, and the last ends with the file. */
    st_tensor **order = nb_malloc((n ? n : 1) * sizeof *order);
    if (!order) {
        nb_set_error(NULL, NB_ERR_NOMEM, NULL, 0, "%s: out of memory reading %s", who, path);
        return NB_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) order[i] = &ts[i];
    qsort(order, n, sizeof *order, by_begin);
    uint64_t at = 0;
    nb_status st = NB_OK;
    for (size_t i = 0; i < n && st == NB_OK; i++) {
        if (order[i]->begin != at) {
            st = NB_ERR_VALUE;
            nb_set_error(NULL, st, NULL, 0, "%s: %s: tensor '%s' starts at byte %llu of the data, where %s %llu",
                         who, path, order[i]->name, (unsigned long long)order[i]->begin,
                         order[i]->begin > at ? "nothing fills the bytes from" : "it overlaps the tensor before, ending at",
                         (unsigned long long)at);
        }
        at = order[i]->end;
    }
    if (st == NB_OK && at != data_len) {
        st = NB_ERR_VALUE;
        nb_set_error(NULL, st, NULL, 0, "%s: %s has %llu bytes of data after its last tensor", who, path,
                     (unsigned long long)(data_len - at));
    }
    nb_free(order);
    return st;
}

nb_status nb_safetensors_load_buffer(nb_params *ps, const nb_file_extras *x, const char *who, const char *path,
                                     const unsigned char *buf, size_t len) {
    if (len < 8) {
        nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s is truncated: %zu bytes, less than the 8 of the header's length",
                     who, path, len);
        return NB_ERR_VALUE;
    }
    uint64_t header_len = nb_get_uint_le(buf, 8);
    if (header_len > MAX_HEADER_BYTES || header_len > len - 8) {
        nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s: the header claims %llu bytes but %s", who, path,
                     (unsigned long long)header_len,
                     header_len > len - 8 ? "the file is shorter (truncated, or not a safetensors file?)"
                                          : "the limit is 100 MB (not a safetensors file?)");
        return NB_ERR_VALUE;
    }
    const unsigned char *header = buf + 8;
    size_t bad;
    if (!valid_utf8(header, (size_t)header_len, &bad)) {
        nb_set_error(NULL, NB_ERR_VALUE, NULL, 0, "%s: %s: the header is not UTF-8 text (byte %zu)", who, path, bad);
        return NB_ERR_VALUE;
    }
    json j = {header, header, header + header_len, who, path};
    st_tensor *ts;
    size_t n;
    nb_meta meta = {0};
    nb_status st = read_header(&j, &meta, &ts, &n);
    const unsigned char *data = header + header_len;
    if (st == NB_OK && x && x->check) st = x->check(x->user, &meta);
    if (st == NB_OK) st = check_tensors(who, path, ps, x, ts, n, data, (uint64_t)(buf + len - data));
    /* Only now, with every check passed, change the model. */
    for (size_t i = 0; st == NB_OK && i < n; i++) {
        nb_tensor *p = ts[i].param;
        if (!p) continue;
        nb_mark_written(p);
        for (size_t k = 0; k < p->size; k++) {
            double v = file_value(data + ts[i].begin, ts[i].dtype, k);
            if (p->dtype == NB_F32)
                NB_F(p)[k] = (float)v;
            else
                NB_D(p)[k] = v;
        }
    }
    if (st == NB_OK && x && x->commit) x->commit(x->user, &meta);
    nb_meta_free(&meta);
    nb_free(ts);
    return st;
}

nb_status nb_params_load_safetensors(nb_params *ps, const char *path) {
    static const char who[] = "nb_params_load_safetensors";
    if (!ps || !path) {
        nb_set_error(NULL, NB_ERR_NULL, NULL, 0, "%s: %s is NULL", who, ps ? "the path" : "the parameter set");
        return NB_ERR_NULL;
    }
    size_t len = 0;
    nb_status st;
    unsigned char *buf = nb_read_whole_file(who, path, &len, &st);
    if (!buf) return st;
    nb_file_extras params_only = {.skip_reserved = true}; /* a checkpoint's parameters alone */
    st = nb_safetensors_load_buffer(ps, &params_only, who, path, buf, len);
    nb_free(buf);
    return st;
}
