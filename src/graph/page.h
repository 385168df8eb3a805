/*
 * The backward stepper's style and script (src/graph/page.c), which
 * src/graph/frames.c writes into its page.
 */
#ifndef NABLA_PAGE_H
#define NABLA_PAGE_H

#include "picture.h"

extern const char nb_page_style[];
extern const char nb_page_script[];

#endif
