/*
 * Every string a user can set (tensor, loss and scope names, titles, axis
 * symbols, op names, formulas and describe() text) reaches an output only
 * through these functions, one per language (src/tensor/escape.c).  A
 * name's bytes are never copied into a file by hand.
 *
 * What every language does first, to the text as it will be shown:
 *   - bytes that are not UTF-8 become U+FFFD, one for each maximal invalid
 *     subsequence (as browsers and Python's "replace" decode them), and so
 *     do U+FFFE and U+FFFF, which XML (SVG) forbids;
 *   - control characters (U+0000 to U+001F, U+007F) become their visible
 *     pictures (U+2400 + c, U+2421 for DEL): "a\tb" shows as "a␉b" — except
 *     a newline where the language has lines (dot, HTML), and except in
 *     JSON, which keeps every character exactly (data, not display).
 * Then each writes the language's own escapes.
 */
#ifndef NABLA_ESCAPE_H
#define NABLA_ESCAPE_H

#include <stddef.h>
#include <stdio.h>

typedef enum {
    /* Plain text of one line (a name inside a picture's label, before the
     * label itself is escaped for its file): no escapes, and a newline
     * becomes its picture too, so that a name never adds a line. */
    NB_ESC_LINE,
    /* Inside a dot "..." string (a label): \ " and & escaped (& as &amp;,
     * because Graphviz reads entities in labels), a newline as dot's \n;
     * dot's own escapes (\N, \G, \l) therefore show as written. */
    NB_ESC_DOT,
    /* HTML text or a quoted attribute value: & < > " ' as references. */
    NB_ESC_HTML,
    /* Inside a JSON "..." string, safe inside a <script> element: " \ and
     * every control character escaped, and < > & U+2028 U+2029 written as
     * \u003c \u003e \u0026 \u2028 \u2029, so that no "</script>" or "<!--"
     * can appear. */
    NB_ESC_JSON,
} nb_esc_lang;

/* Where escaped text goes: put(to, bytes, n). */
typedef void nb_put_fn(void *to, const char *s, size_t n);

/* Writes s (NULL is "") in language lang through put. */
void nb_escape(nb_esc_lang lang, const char *s, nb_put_fn *put, void *to);
/* The same into a FILE. */
void nb_escape_file(FILE *f, nb_esc_lang lang, const char *s);
/* The same into buf (cap >= 1 bytes with the NUL), cut at a character (or
 * a whole escape) if it does not fit; returns the length written.  At most
 * NB_ESC_LINE_MAX(n) bytes for NB_ESC_LINE of a string of n bytes. */
size_t nb_escape_buf(char *buf, size_t cap, nb_esc_lang lang, const char *s);
#define NB_ESC_LINE_MAX(n) (3 * (n) + 1) /* each byte gives at most 3 (U+FFFD, a picture) */

#endif
