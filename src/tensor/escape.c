/*
 * Text for other languages: the one place where a user's string is escaped
 * for a picture, a page, a script's data or a file's header (see
 * src/escape.h for what each language gets).
 *
 * The text is read one character at a time: a UTF-8 sequence, or the
 * longest start of one that is cut short or malformed, which becomes
 * U+FFFD (Unicode's "maximal subpart" rule, which browsers and Python
 * follow, so one bad byte never swallows the good characters after it).
 * Each character is written whole, through one call of put.
 */
#include "../escape.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* The character at s and its length in bytes; U+FFFD with the length of
 * the invalid bytes when s does not start a valid sequence.  s ends with a
 * NUL, which no continuation byte can be, so reading stops there. */
static size_t decode(const unsigned char *s, uint32_t *cp) {
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t len;
    uint32_t v;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) { /* E0: no overlong forms; ED: no surrogates */
        len = 3, v = c & 0x0F;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) { /* F0: no overlong forms; F4: nothing past U+10FFFF */
        len = 4, v = c & 0x07;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else { /* a continuation byte, C0, C1 or F5..FF: never valid first */
        *cp = 0xFFFD;
        return 1;
    }
    for (size_t k = 1; k < len; k++, lo = 0x80, hi = 0xBF) {
        if (s[k] < lo || s[k] > hi) {
            *cp = 0xFFFD;
            return k;
        }
        v = (v << 6) | (s[k] & 0x3F);
    }
    *cp = v;
    return len;
}

static void put_utf8(uint32_t cp, nb_put_fn *put, void *to) {
    char b[3]; /* only pictures and U+FFFD are written this way: 3 bytes */
    b[0] = (char)(0xE0 | (cp >> 12));
    b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    b[2] = (char)(0x80 | (cp & 0x3F));
    put(to, b, 3);
}

static void put_str(const char *s, nb_put_fn *put, void *to) { put(to, s, strlen(s)); }

/* A control character: its picture, or what the language writes for it. */
static void put_control(nb_esc_lang lang, uint32_t c, nb_put_fn *put, void *to) {
    if (lang == NB_ESC_JSON) {
        static const char hex[] = "0123456789abcdef";
        if (c == '\n') {
            put_str("\\n", put, to);
            return;
        }
        char esc[7] = "\\u00";
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 15];
        put(to, esc, 6);
    } else if (c == '\n' && lang == NB_ESC_DOT) {
        put_str("\\n", put, to); /* dot's line break */
    } else if (c == '\n' && lang == NB_ESC_HTML) {
        put_str("\n", put, to);
    } else {
        put_utf8(c == 0x7F ? 0x2421 : 0x2400 + c, put, to);
    }
}

/* The language's escape for character cp, or NULL to write it as it is. */
static const char *escape_of(nb_esc_lang lang, uint32_t cp) {
    switch (lang) {
    case NB_ESC_DOT:
        return cp == '"' ? "\\\"" : cp == '\\' ? "\\\\" : cp == '&' ? "&amp;" : NULL;
    case NB_ESC_HTML:
        return cp == '&' ? "&amp;" : cp == '<' ? "&lt;" : cp == '>' ? "&gt;" : cp == '"' ? "&quot;"
               : cp == '\'' ? "&#39;" : NULL;
    case NB_ESC_JSON:
        return cp == '"' ? "\\\"" : cp == '\\' ? "\\\\" : cp == '<' ? "\\u003c" : cp == '>' ? "\\u003e"
               : cp == '&' ? "\\u0026" : cp == 0x2028 ? "\\u2028" : cp == 0x2029 ? "\\u2029"
               : cp == 0xFFFE ? "\\ufffe" : cp == 0xFFFF ? "\\uffff" : NULL;
    case NB_ESC_LINE:
        break;
    }
    return NULL;
}

void nb_escape(nb_esc_lang lang, const char *s, nb_put_fn *put, void *to) {
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        uint32_t cp;
        size_t len = decode(p, &cp);
        const char *esc = escape_of(lang, cp);
        if (cp < 0x20 || cp == 0x7F)
            put_control(lang, cp, put, to);
        else if (esc)
            put_str(esc, put, to);
        else if (cp == 0xFFFD || cp == 0xFFFE || cp == 0xFFFF) /* bad bytes, or what XML forbids */
            put_utf8(0xFFFD, put, to);
        else
            put(to, (const char *)p, len);
        p += len;
    }
}

static void put_file(void *f, const char *s, size_t n) { fwrite(s, 1, n, f); }

void nb_escape_file(FILE *f, nb_esc_lang lang, const char *s) { nb_escape(lang, s, put_file, f); }

typedef struct {
    char *buf;
    size_t cap, len;
    bool full;
} fixed_buffer;

/* Each call is one character or one escape: whole, or not at all. */
static void put_fixed(void *to, const char *s, size_t n) {
    fixed_buffer *b = to;
    if (b->full || b->len + n >= b->cap) {
        b->full = true;
        return;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
}

size_t nb_escape_buf(char *buf, size_t cap, nb_esc_lang lang, const char *s) {
    fixed_buffer b = {buf, cap, 0, false};
    nb_escape(lang, s, put_fixed, &b);
    buf[b.len] = '\0';
    return b.len;
}
