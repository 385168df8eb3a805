/*
 * Strings a user can set (names, titles, formulas...) that break an output
 * which does not escape them, one list for every test that needs them
 * (tests/test_escape.c, the graph fuzzer):
 *
 *     static const char *const hostile[] = {NB_HOSTILE_STRINGS};
 *
 * Each is at most 31 bytes unless it is meant to be cut (a tensor's name
 * holds NB_NAME_MAX - 1 = 31), and none holds a NUL.
 */
#ifndef NABLA_TEST_HOSTILE_STRINGS_H
#define NABLA_TEST_HOSTILE_STRINGS_H

#define NB_HOSTILE_STRINGS                                                                     \
    /* dot: a quote ends the string, then attributes follow */                                 \
    "E\"x", "E\" URL=\"javascript:alert(1)\"", "E\" URL=\"javascript:0\" a=\"", "x\"];evil[label=\"", "\\", "a\\\"b",           \
    /* dot's own escapes, record labels, HTML-like labels */                                   \
    "\\N\\G\\E\\T\\H\\L\\l\\r\\n", "{a|<b>c}", "<<b>bold</b>>",                                \
    /* HTML, SVG and the script element */                                                     \
    "<svg onload=alert(1)>", "<img src=x onerror=alert(1)>", "<!--<script>", "</script><b>x",   \
    "</title><svg onload=alert(1)>",                                                           \
    "]]><x>", "<![CDATA[x]]>", "&lt;&amp;&#60;&#x3c;", "'single' \"double\"", "-->",             \
    /* JSON and JavaScript */                                                                  \
    "\"}]}{\"a\":[\"", "\xe2\x80\xa8 and \xe2\x80\xa9", "${x}`id`$(id)",                       \
    /* format strings, spreadsheets, shells, gnuplot */                                        \
    "%s%n%x%%", "=cmd|'/C calc'!A0", "+1", "-1", "@SUM(1)", "|id", "<id",                       \
    /* lines, controls, spaces */                                                              \
    "line\nbreak", "cr\rtab\tend", "\x01\x1f\x7f bell\a", "  two  spaces  ",                    \
    /* not UTF-8, and characters XML forbids */                                                \
    "bad \xff\xfe \xc3( \xe2\x82 end", "\xed\xa0\x80 surrogate", "\xef\xbf\xbe\xef\xbf\xbf",   \
    /* long: cut to 31 bytes, between characters */                                            \
    "0123456789abcdefghijklmnopqrstuvwxyz<script>", "∂∂∂∂∂∂∂∂∂∂∂∂"

#endif
